"""facemark.validate: accuracy and latency of every artifact against PyTorch, report, gate."""
