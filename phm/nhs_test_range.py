"""How many synthetic patients the NHS test-number range holds: one figure for the generator,
the ``phm`` command and the docs.

NHS numbers 999 000 0000 to 999 999 9999 are reserved for testing. Their 10**6 stems
(``999`` + 6 digits) give 909,091 valid numbers: the other 90,909 stems have a Modulus 11
check digit of 10, which no NHS number has (``phm.synth.codes.nhs_test_capacity()`` counts
them; a test checks it equals this constant).

The generator gives a number to every person it writes: the currently registered patients
asked for, and also those who died or left in the two years before the extract date, about
7.7 % more (904,407 and 904,435 people for 840,000 current patients with seeds 42 and 7;
about 844,000 current patients use the whole range). Hence the round figure below.

This module is deliberately tiny (no numpy): the ``phm`` command's help text reads it.
"""

from __future__ import annotations

#: valid NHS numbers in the test range 999 000 0000 - 999 999 9999
NHS_TEST_CAPACITY = 909_091

#: current patients a synthetic delivery can have within the test range
NHS_TEST_PATIENTS = 840_000

NHS_TEST_RANGE_NOTE = (
    f"The 999 NHS test-number range holds {NHS_TEST_CAPACITY:,} valid numbers, enough for "
    f"{NHS_TEST_PATIENTS:,} current patients plus those who died or left in the last two years"
)
