"""``organsam serve``: a FastAPI app with a single-page viewer over the segmentation API.

Needs the ``serve`` extra (``pip install organsam[serve]``: fastapi, uvicorn, python-multipart).
"""

from organsam.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str):  # import FastAPI only when the app is asked for
    if name == "create_app":
        from organsam.server.app import create_app

        return create_app
    raise AttributeError(name)
