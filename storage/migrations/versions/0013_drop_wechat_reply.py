"""WeChat's answers are kept with the event (processed_inbound.answer): the wechat_reply table goes

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0013'
down_revision: Union[str, None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('wechat_reply', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wechat_reply_created_at'))
    op.drop_table('wechat_reply')


def downgrade() -> None:
    op.create_table('wechat_reply',
    sa.Column('event_key', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('xml', sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('event_key')
    )
    with op.batch_alter_table('wechat_reply', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wechat_reply_created_at'), ['created_at'], unique=False)
