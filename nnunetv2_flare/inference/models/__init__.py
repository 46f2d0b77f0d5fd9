"""The networks of a phase: loading from nnU-Net results folders, fold / TTA ensembles, digests, backends."""
