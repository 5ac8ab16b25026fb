"""Deep training: backbones, decoders, the one training loop, the deep-method base, hyperspheres."""
