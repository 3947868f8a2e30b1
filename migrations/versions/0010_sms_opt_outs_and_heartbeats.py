"""numbers opted out of SMS, and publishers known from their heartbeats

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 12:40:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate emits sqlmodel.sql.sqltypes.AutoString)
import escalator.store.tables  # noqa: F401  (custom column types)


revision: str = '0010'
down_revision: Union[str, None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('sms_opt_outs',
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('at', escalator.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.PrimaryKeyConstraint('phone')
    )
    op.create_table('heartbeats',
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('interval_s', sa.Integer(), nullable=False),
    sa.Column('first_at', escalator.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_at', escalator.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('incident_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.PrimaryKeyConstraint('source')
    )


def downgrade() -> None:
    op.drop_table('heartbeats')
    op.drop_table('sms_opt_outs')
