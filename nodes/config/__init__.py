"""Reading and checking a topology (`supervisor_tree.yaml`)."""
