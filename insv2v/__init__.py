"""InsV2V Studio: instruction-based video editing (Consistent Video-to-Video Transfer Using Synthetic Dataset)."""

from insv2v.pipeline import InsV2VPipeline, InsV2VPipelineOutput

__all__ = ["InsV2VPipeline", "InsV2VPipelineOutput"]
__version__ = "0.1.0"
