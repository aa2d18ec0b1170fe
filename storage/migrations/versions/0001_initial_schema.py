"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0001'
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:

    op.create_table('dialogue_state',
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('external_user_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('flow', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('step', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('channel', 'external_user_id')
    )
    op.create_table('processed_inbound',
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('event_key', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('channel', 'event_key')
    )
    with op.batch_alter_table('processed_inbound', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_processed_inbound_created_at'), ['created_at'], unique=False)

    op.create_table('unit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('cadre',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('mobile', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('post', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('duties', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('mobile')
    )
    with op.batch_alter_table('cadre', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cadre_unit_id'), ['unit_id'], unique=False)

    op.create_table('bindingcode',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('used_by', sqlmodel.sql.sqltypes.AutoString(length=130), nullable=True),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code_hash')
    )
    with op.batch_alter_table('bindingcode', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bindingcode_cadre_id'), ['cadre_id'], unique=False)

    op.create_table('chataccount',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('external_user_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('bound_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('bound_by', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('channel', 'external_user_id', name='uq_chat_account')
    )
    with op.batch_alter_table('chataccount', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chataccount_cadre_id'), ['cadre_id'], unique=False)

    op.create_table('household',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('area_kind', sqlmodel.sql.sqltypes.AutoString(length=4), nullable=False),
    sa.Column('area_name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('address', 'name', name='uq_household_address_name')
    )
    with op.batch_alter_table('household', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_household_cadre_id'), ['cadre_id'], unique=False)

    op.create_table('serviceobject',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('workplace', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('unit_id', 'name', 'phone', name='uq_service_object_unit_name_phone')
    )
    with op.batch_alter_table('serviceobject', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_serviceobject_cadre_id'), ['cadre_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_serviceobject_unit_id'), ['unit_id'], unique=False)

    op.create_table('everyday_contact',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('household_id', sa.Integer(), nullable=True),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('half', sqlmodel.sql.sqltypes.AutoString(length=6), nullable=False),
    sa.Column('contacted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['household_id'], ['household.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('everyday_contact', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_everyday_contact_cadre_id'), ['cadre_id'], unique=False)

    op.create_table('visit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('household_id', sa.Integer(), nullable=False),
    sa.Column('half', sqlmodel.sql.sqltypes.AutoString(length=6), nullable=False),
    sa.Column('visited_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('card_left', sa.Boolean(), nullable=False),
    sa.Column('survey', sa.JSON(), nullable=False),
    sa.Column('difficulty_category', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('difficulty_content', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('difficulty_solved', sa.Boolean(), nullable=True),
    sa.Column('leaflet_given', sa.Boolean(), nullable=False),
    sa.Column('photo_ref', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('latitude', sa.Float(), nullable=True),
    sa.Column('longitude', sa.Float(), nullable=True),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['household_id'], ['household.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.create_index('ix_visit_cadre_half', ['cadre_id', 'half'], unique=False)
        batch_op.create_index(batch_op.f('ix_visit_household_id'), ['household_id'], unique=False)

    op.create_table('problem',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('category', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('content', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('household_id', sa.Integer(), nullable=True),
    sa.Column('visit_id', sa.Integer(), nullable=True),
    sa.Column('raised_by_cadre_id', sa.Integer(), nullable=True),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('raiser_name', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=True),
    sa.Column('raiser_phone', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['household_id'], ['household.id'], ),
    sa.ForeignKeyConstraint(['raised_by_cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], ),
    sa.ForeignKeyConstraint(['visit_id'], ['visit.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('problem', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_problem_household_id'), ['household_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_problem_status'), ['status'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('problem', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_problem_status'))
        batch_op.drop_index(batch_op.f('ix_problem_household_id'))

    op.drop_table('problem')
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_visit_household_id'))
        batch_op.drop_index('ix_visit_cadre_half')

    op.drop_table('visit')
    with op.batch_alter_table('everyday_contact', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_everyday_contact_cadre_id'))

    op.drop_table('everyday_contact')
    with op.batch_alter_table('serviceobject', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_serviceobject_unit_id'))
        batch_op.drop_index(batch_op.f('ix_serviceobject_cadre_id'))

    op.drop_table('serviceobject')
    with op.batch_alter_table('household', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_household_cadre_id'))

    op.drop_table('household')
    with op.batch_alter_table('chataccount', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chataccount_cadre_id'))

    op.drop_table('chataccount')
    with op.batch_alter_table('bindingcode', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bindingcode_cadre_id'))

    op.drop_table('bindingcode')
    with op.batch_alter_table('cadre', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cadre_unit_id'))

    op.drop_table('cadre')
    op.drop_table('unit')
    with op.batch_alter_table('processed_inbound', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_processed_inbound_created_at'))

    op.drop_table('processed_inbound')
    op.drop_table('dialogue_state')

