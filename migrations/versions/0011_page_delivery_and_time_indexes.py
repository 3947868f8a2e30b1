"""what the provider last said of each page; indexes for the operators' views by time

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 13:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate emits sqlmodel.sql.sqltypes.AutoString)


revision: str = '0011'
down_revision: Union[str, None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('pages', sa.Column('delivery', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
    op.create_index('ix_incidents_closed_at', 'incidents', ['closed_at'], unique=False)
    op.create_index('ix_incidents_opened_at', 'incidents', ['opened_at'], unique=False)
    op.create_index('ix_incident_events_at', 'incident_events', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_incident_events_at', table_name='incident_events')
    op.drop_index('ix_incidents_opened_at', table_name='incidents')
    op.drop_index('ix_incidents_closed_at', table_name='incidents')
    with op.batch_alter_table('pages') as batch:
        batch.drop_column('delivery')
