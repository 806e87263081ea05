"""A bounded, seeded fuzz campaign against real ds_trio processes."""
