"""wechat: followers' last interaction (48-hour window), reply cache for retried events, the shared
access token, permanent scene QR codes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('wechat_access_token',
    sa.Column('app_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('access_token', sqlmodel.sql.sqltypes.AutoString(length=600), nullable=True),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('refreshed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('app_id')
    )
    op.create_table('wechat_reply',
    sa.Column('event_key', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('xml', sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('event_key')
    )
    with op.batch_alter_table('wechat_reply', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wechat_reply_created_at'), ['created_at'], unique=False)

    op.create_table('wechat_user',
    sa.Column('openid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('last_inbound_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('openid')
    )
    op.create_table('wechat_qr_code',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scene', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('code_id', sa.Integer(), nullable=False),
    sa.Column('ticket', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['code_id'], ['evaluation_code.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scene')
    )
    with op.batch_alter_table('wechat_qr_code', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wechat_qr_code_code_id'), ['code_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('wechat_qr_code', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wechat_qr_code_code_id'))

    op.drop_table('wechat_qr_code')
    op.drop_table('wechat_user')
    with op.batch_alter_table('wechat_reply', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wechat_reply_created_at'))

    op.drop_table('wechat_reply')
    op.drop_table('wechat_access_token')
