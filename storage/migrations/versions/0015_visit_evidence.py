"""evidence of visits: household coordinates, the visit's evidence level, location and photo facts,
and the flags of visits in name only (走过场)

Revision ID: 0015
Revises: 0013
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0015'
down_revision: Union[str, None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('household', schema=None) as batch_op:
        batch_op.add_column(sa.Column('latitude', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('longitude', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('coord_source', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True))
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.add_column(sa.Column('evidence', sqlmodel.sql.sqltypes.AutoString(length=10), server_default='none',
                                      nullable=False))
        batch_op.add_column(sa.Column('location_accuracy', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('location_note', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True))
        batch_op.add_column(sa.Column('distance_m', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('photo_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('photo_phash', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column('photo_forwarded', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('household_confirmed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_visit_evidence'), ['evidence'], unique=False)
        batch_op.create_index(batch_op.f('ix_visit_photo_phash'), ['photo_phash'], unique=False)
    op.create_table('visit_flag',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('visit_id', sa.Integer(), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['visit_id'], ['visit.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('visit_id', 'kind')
    )
    with op.batch_alter_table('visit_flag', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_visit_flag_cadre_id'), ['cadre_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_visit_flag_visit_id'), ['visit_id'], unique=False)


def downgrade() -> None:
    op.drop_table('visit_flag')
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_visit_photo_phash'))
        batch_op.drop_index(batch_op.f('ix_visit_evidence'))
        for column in ('household_confirmed_at', 'photo_forwarded', 'photo_phash', 'photo_sha256', 'distance_m',
                       'location_note', 'location_accuracy', 'evidence'):
            batch_op.drop_column(column)
    with op.batch_alter_table('household', schema=None) as batch_op:
        for column in ('coord_source', 'longitude', 'latitude'):
            batch_op.drop_column(column)
