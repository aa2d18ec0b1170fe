"""production runtime: the outbox marks a send in flight (a crash may repeat it once), limits shared by processes

Revision ID: 0009
Revises: 0014
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0009'
down_revision: Union[str, None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('in_flight_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('interrupted', sa.Integer(), nullable=False, server_default='0'))
    op.create_table('rate_budget',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('next_free', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('rate_hit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rate_hit', schema=None) as batch_op:
        batch_op.create_index('ix_rate_hit_key_at', ['key', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rate_hit', schema=None) as batch_op:
        batch_op.drop_index('ix_rate_hit_key_at')
    op.drop_table('rate_hit')
    op.drop_table('rate_budget')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('interrupted')
        batch_op.drop_column('in_flight_at')
