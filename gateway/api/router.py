"""All routers of the gateway."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api import ops, resumable, uploads, videos, web, webhooks

router = APIRouter()
router.include_router(videos.router)
router.include_router(uploads.router)
router.include_router(resumable.router)
router.include_router(webhooks.router)
router.include_router(ops.router)
router.include_router(web.router)
