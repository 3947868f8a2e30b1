"""incident leases (active-active replicas)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 03:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate emits sqlmodel.sql.sqltypes.AutoString)
import escalator.store.tables  # noqa: F401  (custom column types)


revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.add_column(sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch.add_column(sa.Column('lease_until', escalator.store.tables.UTCDateTime(timezone=True), nullable=True))
        batch.create_index('ix_incidents_lease_until', ['lease_until'], unique=False)
        batch.create_index('ix_incidents_owner', ['owner'], unique=False)
    # Incidents still waiting for somebody become claimable at once by whichever replica starts first.
    op.execute("UPDATE incidents SET lease_until = opened_at WHERE status IN ('open', 'exhausted')")


def downgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.drop_index('ix_incidents_owner')
        batch.drop_index('ix_incidents_lease_until')
        batch.drop_column('lease_until')
        batch.drop_column('owner')
