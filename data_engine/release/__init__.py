"""SA-1B-style release: downsample, blur faces and plates, per-image JSON in tar shards, manifest, verifier."""
