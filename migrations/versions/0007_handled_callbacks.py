"""Twilio callbacks already acted on: a replayed SMS or key press changes nothing

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 18:00:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

import escalator.store.tables

revision: str = '0007'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('handled_callbacks',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('at', escalator.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('handled_callbacks', schema=None) as batch_op:
        batch_op.create_index('ix_handled_callbacks_at', ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('handled_callbacks', schema=None) as batch_op:
        batch_op.drop_index('ix_handled_callbacks_at')
    op.drop_table('handled_callbacks')
