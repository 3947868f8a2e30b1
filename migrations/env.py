"""Alembic environment: uses the engine escalator hands over, or ESCALATOR_DATABASE_URL."""

from __future__ import annotations

from alembic import context

from escalator.store.tables import metadata

config = context.config


def _engine():
    engine = config.attributes.get("engine")
    if engine is None:  # plain `alembic ...` from a checkout, e.g. to autogenerate a revision
        from escalator.settings import load_settings
        from escalator.store.db import make_engine

        engine = make_engine(load_settings().database)
    return engine


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `escalator db upgrade`")
run_migrations_online()
