"""the answer kept with each handled event, and when it was delivered

Revision ID: 0012
Revises: 0006
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0012'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('processed_inbound', schema=None) as batch_op:
        batch_op.add_column(sa.Column('answer', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('delivered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('processed_inbound', schema=None) as batch_op:
        batch_op.drop_column('delivered_at')
        batch_op.drop_column('answer')
