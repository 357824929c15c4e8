"""The kernel tests' parameter matrices (tests/_cases.py): every pair of values meets on the simulator."""

import itertools

from _cases import matrix, pairwise


def test_pairwise_cases_cover_every_pair_of_values():
    axes = (["f32", "f64"], ["logistic", "squared", "poisson"], [1, 5, 37], [1, 3, 10, 33], [False, True])
    cases = pairwise(*axes)
    assert len(cases) < len(list(itertools.product(*axes))) / 4
    for i, j in itertools.combinations(range(len(axes)), 2):
        met = {(c[i], c[j]) for c in cases}
        assert met == set(itertools.product(axes[i], axes[j])), (i, j)


def test_a_single_axis_keeps_every_value_and_the_matrix_is_a_subset_of_the_product():
    assert pairwise([1, 2, 3]) == [(1,), (2,), (3,)]
    axes = ([0, 1], ["a", "b", "c"])
    assert set(matrix(*axes)) <= set(itertools.product(*axes))
