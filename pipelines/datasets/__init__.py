"""Datasets: staging hops, publishing, the NVMe cache, zstd compression, preparation and validation."""
