"""InsV2V Studio: instruction-based video editing (Consistent Video-to-Video Transfer Using Synthetic Dataset)."""

__all__ = ["InsV2VPipeline", "InsV2VPipelineOutput"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The pipeline pulls in diffusers and transformers; import it on first use so that light modules
    # (insv2v.video, the CLI's argument parsing) start fast.
    if name in __all__:
        from insv2v import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'insv2v' has no attribute {name!r}")
