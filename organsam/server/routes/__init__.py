"""The API's routers, one per resource; :func:`organsam.server.app.create_app` includes them all."""

from organsam.server.routes import corrections, downloads, general, images, segmentation, sessions, viewer

ROUTERS = (
    viewer.router,
    general.router,
    sessions.router,
    segmentation.router,
    images.router,
    corrections.router,
    downloads.router,
)

__all__ = ["ROUTERS"]
