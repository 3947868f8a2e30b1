"""an index for checking one SMS code of one number (allocation by random probes)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 06:30:00
"""
from typing import Sequence, Union

from alembic import op


revision: str = '0006'
down_revision: Union[str, None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index('ix_sms_codes_phone_code', 'sms_codes', ['phone', 'code'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_sms_codes_phone_code', table_name='sms_codes')
