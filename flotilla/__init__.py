"""Flotilla: Erlang-style supervision trees for fault-tolerant Python worker fleets.

`flotilla.actors` is what runs (supervised actors and the pipeline); `flotilla.nodes` is where
and how it runs (topology, cluster, intake, shell, CLI). In a checkout, `flotilla/actors` and
`flotilla/nodes` link to the top-level `actors/` and `nodes/` folders; an installed wheel maps
them with `package-dir` (pyproject.toml).
"""
