"""the incident of each outbox row (replicas claim rows, each incident's events in order); replaced SMS codes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 19:00:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

import escalator.store.tables

revision: str = '0008'
down_revision: Union[str, None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('sms_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replaced_at', escalator.store.tables.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('incident_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.create_index('ix_outbox_incident_id', ['incident_id', 'id'], unique=False)
    # rows waiting at the upgrade: their incident is in their payload
    outbox = sa.table('outbox', sa.column('id', sa.Integer), sa.column('incident_id', sa.String), sa.column('payload', sa.JSON))
    connection = op.get_bind()
    for row_id, payload in connection.execute(sa.select(outbox.c.id, outbox.c.payload)).all():
        incident = (payload or {}).get('incident_id')
        if incident:
            connection.execute(sa.update(outbox).where(outbox.c.id == row_id).values(incident_id=incident))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_incident_id')
        batch_op.drop_column('incident_id')
    with op.batch_alter_table('sms_codes', schema=None) as batch_op:
        batch_op.drop_column('replaced_at')
