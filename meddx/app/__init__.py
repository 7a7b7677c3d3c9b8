"""The Gradio app: page layout, event handlers and upload clean-up. The only package that imports Gradio."""
