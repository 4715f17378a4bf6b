"""Rules: the typed model of rules files (`model`), their loader (`loader`: files and directory,
`limits`, `yaml_lines`, `values`, `schema`), the expression language (`expr`) and the compiler
(`compiler`, `aggregates`) whose output the core evaluates; `reload` swaps rule sets live."""
