"""The nnUNetv2_flare_predict command: its options, their checks, and the exit codes."""
