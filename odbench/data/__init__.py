"""Reading data: file formats, caches, audio features, augmentation, synthetic sets, user sources."""
