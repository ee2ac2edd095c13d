"""I/O machinery shared by easyrpc's server and clients: the per-process read hub."""
