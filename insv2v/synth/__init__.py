"""The synthetic paired-video data engine: paired prompts, video Prompt-to-Prompt, CLIP filter, datasets."""
