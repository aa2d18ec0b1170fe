"""好差评 by the national rules: 差评 handled by the 作风办, visits disputed by a spot-check and ruled on

Revision ID: 0011
Revises: 0008
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0011'
down_revision: Union[str, None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('problem', schema=None) as batch_op:
        batch_op.add_column(sa.Column('to_office', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disputed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table('spot_check', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ruling', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
        batch_op.add_column(sa.Column('ruled_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('ruled_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_foreign_key('fk_spot_check_ruled_by', 'cadre', ['ruled_by_id'], ['id'])
    with op.batch_alter_table('rating', schema=None) as batch_op:
        batch_op.add_column(sa.Column('voided', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('number', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
        batch_op.create_unique_constraint('uq_rating_number', ['number'])
        batch_op.add_column(sa.Column('visit_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('contact_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_rating_visit', 'visit', ['visit_id'], ['id'])
        batch_op.create_foreign_key('fk_rating_contact', 'everyday_contact', ['contact_id'], ['id'])
    op.create_table('rating_appeal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rating_id', sa.Integer(), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('photo_ref', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('filed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('decision_note', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['decided_by_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['rating_id'], ['rating.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('rating_id')
    )
    with op.batch_alter_table('rating_appeal', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_appeal_cadre_id'), ['cadre_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_appeal_state'), ['state'], unique=False)
    op.create_table('service_ticket',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('code_id', sa.Integer(), nullable=False),
    sa.Column('visit_id', sa.Integer(), nullable=True),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('issued_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('rating_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['code_id'], ['evaluation_code.id'], ),
    sa.ForeignKeyConstraint(['contact_id'], ['everyday_contact.id'], ),
    sa.ForeignKeyConstraint(['rating_id'], ['rating.id'], ),
    sa.ForeignKeyConstraint(['visit_id'], ['visit.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('service_ticket', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_ticket_cadre_id'), ['cadre_id'], unique=False)


def downgrade() -> None:
    op.drop_table('service_ticket')
    op.drop_table('rating_appeal')
    with op.batch_alter_table('rating', schema=None) as batch_op:
        batch_op.drop_constraint('fk_rating_contact', type_='foreignkey')
        batch_op.drop_constraint('fk_rating_visit', type_='foreignkey')
        batch_op.drop_column('contact_id')
        batch_op.drop_column('visit_id')
        batch_op.drop_constraint('uq_rating_number', type_='unique')
        batch_op.drop_column('number')
        batch_op.drop_column('voided')
    with op.batch_alter_table('spot_check', schema=None) as batch_op:
        batch_op.drop_constraint('fk_spot_check_ruled_by', type_='foreignkey')
        batch_op.drop_column('ruled_at')
        batch_op.drop_column('ruled_by_id')
        batch_op.drop_column('ruling')
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.drop_column('disputed_at')
    with op.batch_alter_table('problem', schema=None) as batch_op:
        batch_op.drop_column('to_office')
