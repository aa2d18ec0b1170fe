"""wecom: the directory's members matched to cadres, the reply cache for retried callbacks

Revision ID: 0010
Revises: 0011
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0010'
down_revision: Union[str, None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('wecom_member',
    sa.Column('userid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('mobile', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('departments', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=True),
    sa.Column('synced_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.PrimaryKeyConstraint('userid')
    )
    with op.batch_alter_table('wecom_member', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wecom_member_cadre_id'), ['cadre_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('wecom_member', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wecom_member_cadre_id'))
    op.drop_table('wecom_member')
