"""The Gradio app: the page layout (`page`), its event handlers (`handlers`), what it shows of a result
(`views`), and upload clean-up (`uploads`). The only package that imports Gradio."""

from meddx.app.page import build_demo, launch_kwargs, queue_kwargs

__all__ = ["build_demo", "launch_kwargs", "queue_kwargs"]
