"""A web page and JSON API where people try an exported model: `python serve.py`.

`create_app` (in `kemdy_tf.web.app`) builds the FastAPI application; docs/web.md
describes the page, the API and its limits.
"""

from kemdy_tf.web.app import Limits, create_app

__all__ = ["Limits", "create_app"]
