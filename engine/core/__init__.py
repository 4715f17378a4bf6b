"""The evaluation core: state + event (or clock) + compiled rules → state + triggers, deadlines, per-event isolation."""
