"""One case in memory: the cascade (locate, crop, segment, restore) and its result."""
