"""ledger

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('spot_check',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('visit_id', sa.Integer(), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.Column('half', sqlmodel.sql.sqltypes.AutoString(length=6), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('drawn_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('checked_by_id', sa.Integer(), nullable=True),
    sa.Column('checked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['checked_by_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['visit_id'], ['visit.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('visit_id')
    )
    with op.batch_alter_table('spot_check', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_spot_check_cadre_id'), ['cadre_id'], unique=False)

    op.create_table('problem_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('problem_id', sa.Integer(), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('actor_cadre_id', sa.Integer(), nullable=True),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('from_status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('to_status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.ForeignKeyConstraint(['actor_cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['problem_id'], ['problem.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('problem_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_problem_event_problem_id'), ['problem_id'], unique=False)

    with op.batch_alter_table('problem', schema=None) as batch_op:
        batch_op.add_column(sa.Column('service_object_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('remit', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True))
        batch_op.add_column(sa.Column('raiser_channel', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
        batch_op.add_column(sa.Column('raiser_user_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.add_column(sa.Column('responsible_unit_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('responsible_a_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('responsible_b_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('assigned_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('assigned_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('deadline', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('last_action_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('b_asked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('result', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True))
        batch_op.add_column(sa.Column('closed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('answer', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))
        batch_op.add_column(sa.Column('answered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('reopened', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('hotline_status', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.create_index(batch_op.f('ix_problem_responsible_unit_id'), ['responsible_unit_id'], unique=False)
        batch_op.create_foreign_key('fk_problem_assigned_by_id', 'cadre', ['assigned_by_id'], ['id'])
        batch_op.create_foreign_key('fk_problem_service_object_id', 'serviceobject', ['service_object_id'], ['id'])
        batch_op.create_foreign_key('fk_problem_responsible_unit_id', 'unit', ['responsible_unit_id'], ['id'])
        batch_op.create_foreign_key('fk_problem_responsible_a_id', 'cadre', ['responsible_a_id'], ['id'])
        batch_op.create_foreign_key('fk_problem_responsible_b_id', 'cadre', ['responsible_b_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('problem', schema=None) as batch_op:
        batch_op.drop_constraint('fk_problem_assigned_by_id', type_='foreignkey')
        batch_op.drop_constraint('fk_problem_service_object_id', type_='foreignkey')
        batch_op.drop_constraint('fk_problem_responsible_unit_id', type_='foreignkey')
        batch_op.drop_constraint('fk_problem_responsible_a_id', type_='foreignkey')
        batch_op.drop_constraint('fk_problem_responsible_b_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_problem_responsible_unit_id'))
        batch_op.drop_column('note')
        batch_op.drop_column('hotline_status')
        batch_op.drop_column('reopened')
        batch_op.drop_column('answered_at')
        batch_op.drop_column('answer')
        batch_op.drop_column('closed_at')
        batch_op.drop_column('result')
        batch_op.drop_column('b_asked_at')
        batch_op.drop_column('last_action_at')
        batch_op.drop_column('deadline')
        batch_op.drop_column('assigned_at')
        batch_op.drop_column('assigned_by_id')
        batch_op.drop_column('responsible_b_id')
        batch_op.drop_column('responsible_a_id')
        batch_op.drop_column('responsible_unit_id')
        batch_op.drop_column('raiser_user_id')
        batch_op.drop_column('raiser_channel')
        batch_op.drop_column('remit')
        batch_op.drop_column('service_object_id')

    with op.batch_alter_table('problem_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_problem_event_problem_id'))

    op.drop_table('problem_event')
    with op.batch_alter_table('spot_check', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_spot_check_cadre_id'))

    op.drop_table('spot_check')

