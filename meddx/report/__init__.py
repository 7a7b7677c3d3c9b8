"""Stage 4, the report: one context for every format (`render.report_context`), rendered as Markdown, HTML
and JSON from the Jinja2 templates in ``templates/``."""
