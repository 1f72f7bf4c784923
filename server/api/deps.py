"""Typed dependencies, so handlers stay short."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from dynascope.server.db.session import get_engine
from dynascope.server.settings import Settings


def get_session() -> Iterator[Session]:
    session = sessionmaker(get_engine(), expire_on_commit=False)()
    try:
        yield session
    finally:
        session.close()


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SessionDep = Annotated[Session, Depends(get_session)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
