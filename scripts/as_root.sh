# Sourced by the scripts that install system packages: `as_root CMD...` runs CMD directly as
# root (CI containers), else through sudo when there is one, else fails through the caller's `die`.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "'$*' needs root and sudo is not available; run it as root"
    fi
}
