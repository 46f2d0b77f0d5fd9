"""One CT before the networks: reading, checks and repairs, orientation, NIfTI transforms, API input kinds."""
