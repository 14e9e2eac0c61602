"""The measurements behind `voxledger bench`, ours next to a reference in the same run: the
harness, one module per group of benchmarks, and the suite that runs them in order."""
