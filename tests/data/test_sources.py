"""Representative data: every accepted form, and early, actionable errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mct_logger
from mct_logger.data import dataset_length
from mct_logger.data.batches import CalibrationBatches
from mct_logger.data.sources import InputSpec, RepresentativeDataError, first_batches, load_batches

ONE = [InputSpec("img", (None, 4, 4, 1), "float32")]
TWO = [InputSpec("img", (None, 4, 4, 1), "float32"), InputSpec("vec", (None, 3), "float32")]


def _images(n=10, seed=0):
    return np.random.default_rng(seed).random((n, 4, 4, 1)).astype("float32")


def test_numpy_array_is_batched():
    batches = load_batches(_images(10), ONE, batch_size=4)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]


def test_mct_style_callable_yielding_lists_of_batches():
    x = _images(8)
    batches = load_batches(lambda: iter([[x[:4]], [x[4:]]]), ONE)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)


def test_generator_and_list_of_batches():
    x = _images(6)
    assert len(load_batches((x[i:i + 2] for i in range(0, 6, 2)), ONE)) == 3
    assert len(load_batches([x[:3], x[3:]], ONE)) == 2


def test_labelled_tf_dataset_labels_are_ignored():
    x = _images(10)
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(10))).batch(5)
    batches = load_batches(ds, ONE)
    np.testing.assert_allclose(np.concatenate([b[0] for b in batches]), x)


def test_labelled_numpy_pairs_are_accepted():
    x = _images(4)
    batches = load_batches([(x, np.zeros(4)), (x, np.ones(4), np.ones(4))], ONE)
    assert len(batches) == 2 and batches[0][0].shape == (4, 4, 4, 1)


def test_multi_input_forms():
    x, v = _images(6), np.ones((6, 3), "float32")
    assert len(load_batches([x, v], TWO, batch_size=4)) == 2
    assert len(load_batches({"img": x, "vec": v}, TWO, batch_size=6)) == 1
    assert len(load_batches(lambda: [[x, v], {"vec": v, "img": x}], TWO)) == 2
    labelled = tf.data.Dataset.from_tensor_slices(((x, v), np.zeros(6))).batch(3)
    assert len(load_batches(labelled, TWO)) == 2


def test_integer_images_are_cast_to_the_model_dtype():
    x = (np.arange(32).reshape(2, 4, 4, 1)).astype("uint8")
    assert load_batches(x, ONE)[0][0].dtype == np.float32


@pytest.mark.parametrize(
    "data,match",
    [
        (None, "is None"),
        (np.zeros((0, 4, 4, 1), "float32"), "empty"),
        (lambda: iter([]), "empty"),
        (np.zeros((4, 5, 4, 1), "float32"), r"shape \(4, 5, 4, 1\).*\(batch, 4, 4, 1\)"),
        (np.zeros((4, 4, 4), "float32"), "shape"),
        (np.array([["a"] * 16] * 2).reshape(2, 4, 4, 1), "dtype"),
        (np.full((2, 4, 4, 1), np.nan, "float32"), "NaN or Inf"),
        (np.full((2, 4, 4, 1), np.inf, "float32"), "NaN or Inf"),
        (lambda n: None, "zero-argument"),
        (42, "not iterable"),
        ([{"image": np.zeros((2, 4, 4, 1))}], "without the model input"),
    ],
    ids=["none", "empty-array", "empty-callable", "wrong-shape", "wrong-rank", "strings",
         "nan", "inf", "callable-with-args", "not-iterable", "dict-wrong-key"],
)
def test_bad_data_fails_naming_the_input_and_the_fix(data, match):
    with pytest.raises(RepresentativeDataError, match=match):
        load_batches(data, ONE)


def test_bad_batch_is_named_by_its_index():
    x = _images(4)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(RepresentativeDataError, match=r"batch 2, input 'img'"):
        load_batches([x, x, bad], ONE)


def test_mismatched_batch_sizes_across_inputs():
    with pytest.raises(RepresentativeDataError, match="different batch sizes"):
        load_batches([[_images(4), np.ones((3, 3), "float32")]], TWO)


def test_one_array_for_two_inputs():
    with pytest.raises(RepresentativeDataError, match="2 inputs"):
        load_batches(_images(4), TWO)


@pytest.mark.parametrize("arrays", [3, 1])
@pytest.mark.parametrize("container", [list, tuple])
def test_another_number_of_arrays_than_inputs_names_both_counts_and_the_inputs(arrays, container):
    x, v = _images(4), np.ones((4, 3), "float32")
    data = container([x, v, v][:arrays])
    message = (rf"is a {container.__name__} of {arrays} arrays? but the model has 2 inputs "
               r"\('img', 'vec'\)\. Pass one array per input")
    with pytest.raises(RepresentativeDataError, match="representative_data " + message):
        load_batches(data, TWO)
    with pytest.raises(RepresentativeDataError, match="representative_data batch 1 " + message):
        load_batches(lambda: iter([[x, v], data]), TWO)


def test_ptq_fails_on_bad_data_before_any_stage_runs():
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    stages = []
    listener = lambda stage, graph, result: stages.append(stage)  # noqa: E731
    mct_logger.add_stage_listener(listener)
    try:
        bad = _images(8)
        bad[3] = np.inf
        with pytest.raises(RepresentativeDataError, match="NaN or Inf"):
            mct_logger.keras_post_training_quantization(model, bad)
    finally:
        mct_logger.remove_stage_listener(listener)
    assert stages == []


# ------------------------------------------------ unbounded data: read up to a cap


def _endless(x):
    while True:
        yield x


@pytest.mark.parametrize("form", ["repeat", "generator", "callable", "numpy"])
def test_unbounded_or_long_data_is_read_up_to_the_cap(form):
    x = _images(6)
    data = {
        "repeat": lambda: tf.data.Dataset.from_tensor_slices(x[:4]).batch(4).repeat(),
        "generator": lambda: _endless(x[:4]),
        "callable": lambda: (lambda: _endless(x[:4])),
        "numpy": lambda: np.concatenate([x] * 5),
    }[form]()
    batches = load_batches(data, ONE, batch_size=4, max_samples=11)
    assert sum(len(b[0]) for b in batches) == 11
    assert len(batches[-1][0]) == 3  # the last batch is cut to fit


def test_infinite_dataset_without_a_cap_is_refused_naming_take():
    data = tf.data.Dataset.from_tensor_slices(_images(4)).repeat()
    with pytest.raises(RepresentativeDataError, match=r"infinite.*\.take\(n\).*or set "
                                                      r"QuantizationConfig.num_calibration_samples"):
        load_batches(data, ONE, max_samples=None)


def _keep(t):
    return tf.reduce_sum(t) > -1  # keeps every sample, but hides the dataset's length


def _from_generator(x):
    return tf.data.Dataset.from_generator(lambda: iter(x), output_signature=tf.TensorSpec(
        (4, 4, 1), tf.float32))


ENDLESS = {  # cardinality UNKNOWN (the filter), yet read forever
    "repeat-filter": lambda ds: ds.repeat().filter(_keep).batch(4),
    "shuffle-repeat-map-filter-prefetch":
        lambda ds: ds.shuffle(4).repeat().map(lambda t: t * 2).filter(_keep).batch(4).prefetch(1),
    "finite-then-endless": lambda ds: ds.filter(_keep).concatenate(ds.repeat().filter(_keep)),
}
ENDING = {  # cardinality UNKNOWN too, but they end
    "filter": lambda ds: ds.filter(_keep).batch(4),
    "repeat-3-filter": lambda ds: ds.repeat(3).filter(_keep).batch(4),
    "repeat-filter-take": lambda ds: ds.repeat().filter(_keep).take(10).batch(4),
}


@pytest.mark.parametrize("pipeline", sorted(ENDLESS))
def test_endless_dataset_of_unknown_cardinality_without_a_cap_is_refused(pipeline):
    data = ENDLESS[pipeline](tf.data.Dataset.from_tensor_slices(_images(4)))
    assert int(data.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    assert dataset_length.length(data) == "endless"
    with pytest.raises(RepresentativeDataError,
                       match=r"infinite.*UNKNOWN.*\.repeat\(\) with no count.*\.take\(n\)"):
        load_batches(data, ONE, max_samples=None)


@pytest.mark.parametrize("pipeline", sorted(ENDING))
def test_dataset_of_unknown_cardinality_that_ends_is_read_whole_without_a_warning(
        pipeline, caplog):
    data = ENDING[pipeline](tf.data.Dataset.from_tensor_slices(_images(4)))
    assert int(data.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    with caplog.at_level("WARNING", logger="mct_logger"):
        batches = load_batches(data, ONE, max_samples=None)
    assert sum(len(b[0]) for b in batches) == {"filter": 4, "repeat-3-filter": 12,
                                               "repeat-filter-take": 10}[pipeline]
    assert not caplog.records


def test_dataset_whose_length_cannot_be_told_is_read_with_one_warning(caplog):
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    data = _from_generator(_images(12)).batch(4)
    assert dataset_length.length(data) == "unknown"
    config = mct_logger.QuantizationConfig(num_calibration_samples=None)
    with caplog.at_level("WARNING", logger="mct_logger"):
        _, info = mct_logger.keras_post_training_quantization(model, data, config)
    assert info.stage_results["statistics_collection"].num_samples == 12
    warned = [r.getMessage() for r in caplog.records if "unknown length" in r.getMessage()]
    assert len(warned) == 1 and ".take(n)" in warned[0]  # once, not once per pass


def test_ptq_refuses_an_endless_filtered_dataset_before_any_stage_runs():
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    stages = []
    listener = lambda stage, graph, result: stages.append(stage)  # noqa: E731
    data = ENDLESS["repeat-filter"](tf.data.Dataset.from_tensor_slices(_images(8)))
    config = mct_logger.QuantizationConfig(num_calibration_samples=None)
    mct_logger.add_stage_listener(listener)
    try:
        with pytest.raises(RepresentativeDataError, match="infinite"):
            mct_logger.keras_post_training_quantization(model, data, config)
    finally:
        mct_logger.remove_stage_listener(listener)
    assert stages == []
    capped = mct_logger.QuantizationConfig(num_calibration_samples=20)  # a cap ends it
    _, info = mct_logger.keras_post_training_quantization(model, data, capped)
    assert info.stage_results["statistics_collection"].num_samples == 20


def test_ptq_stops_an_endless_generator_at_num_calibration_samples_and_logs_it(caplog):
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    config = mct_logger.QuantizationConfig(num_calibration_samples=40, batch_size=8)
    with caplog.at_level("INFO", logger="mct_logger"):
        _, info = mct_logger.keras_post_training_quantization(model, _endless(_images(16)), config)
    assert info.stage_results["statistics_collection"].num_samples == 40
    assert any("40 samples" in r.getMessage() and "num_calibration_samples=40" in r.getMessage()
               for r in caplog.records)


def test_default_cap_is_in_the_recommended_range():
    assert 500 <= mct_logger.QuantizationConfig().num_calibration_samples <= 1000
    with pytest.raises(ValueError, match="num_calibration_samples"):
        mct_logger.QuantizationConfig(num_calibration_samples=0)


# ------------------------------------------------ (x, y) tuples of whole arrays


def test_xy_and_xyw_tuples_of_whole_arrays_are_taken_as_model_fit_takes_them():
    x, y, w = _images(10), np.arange(10), np.ones(10)
    for data in [(x, y), (x, y, w), (x, np.eye(10)[y])]:
        batches = load_batches(data, ONE, batch_size=4)
        np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    v = np.ones((10, 3), "float32")
    for x_multi in [(x, v), [x, v], {"vec": v, "img": x}]:
        batches = load_batches((x_multi, y), TWO, batch_size=10)
        assert len(batches) == 1 and batches[0][1].shape == (10, 3)


def test_xy_list_of_whole_arrays_is_taken_too_but_a_list_of_batches_stays_batches():
    x, y = _images(10), np.arange(10)
    batches = load_batches([x, y], ONE, batch_size=4)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    assert len(load_batches([x[:5], x[5:]], ONE, batch_size=4)) == 2  # two batches
    v = np.ones((10, 3), "float32")
    assert len(load_batches([[x, v], y], TWO, batch_size=10)) == 1


@pytest.mark.parametrize(
    "specs,x,container",
    [(ONE, _images(10), tuple), (ONE, _images(10), list), (ONE, [_images(10)], tuple),
     (TWO, {"img": _images(10), "vec": np.ones((10, 3))}, tuple)],
    ids=["bare-x", "list-xy", "list-x", "dict-x"],
)
def test_xy_with_labels_of_another_length_is_refused_naming_the_labels(specs, x, container):
    with pytest.raises(RepresentativeDataError,
                       match=r"looks like \(x, y\) as model.fit.*x has 10 samples and y has 7"):
        load_batches(container([x, np.arange(7)]), specs)
    with pytest.raises(RepresentativeDataError, match="sample_weight has 9"):
        load_batches(container([x, np.arange(10), np.ones(9)]), specs)


def test_two_batches_of_different_sizes_stay_two_batches():
    x = _images(10)
    assert [len(b[0]) for b in load_batches((x[:6], x[6:]), ONE)] == [6, 4]
    assert [len(b[0]) for b in load_batches(([x[:5]], [x[5:]]), ONE)] == [5, 5]
    v = np.ones((10, 3), "float32")
    assert len(load_batches(((x, v), (x, v)), TWO, batch_size=10)) == 2


@pytest.mark.parametrize("x", [_images(10), [_images(10)], (_images(10),),
                               {"img": _images(10)}], ids=["bare", "list", "tuple", "dict"])
@pytest.mark.parametrize("y", [np.arange(10), None, {"out": np.arange(10)}],
                         ids=["y", "none", "dict-y"])
def test_model_fit_forms_of_x_and_y_for_a_one_input_model(x, y):
    batches = load_batches((x, y), ONE, batch_size=4)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), _images(10))


def test_model_fit_forms_with_y_none_for_two_inputs():
    x, v = _images(6), np.ones((6, 3), "float32")
    for data in [((x, v), None), ({"img": x, "vec": v}, None), [[x, v], None]]:
        assert [b[1].shape for b in load_batches(data, TWO, batch_size=6)] == [(6, 3)]


@pytest.mark.parametrize("form", ["(x, y)", "([x], y)", "({'img': x}, None)"])
def test_ptq_on_x_train_y_train_calibrates_on_every_image(form):
    inputs = keras.Input((4, 4, 1), name="img")
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    x, y = _images(70), np.zeros(70)
    data = {"(x, y)": (x, y), "([x], y)": ([x], y), "({'img': x}, None)": ({"img": x}, None)}
    _, info = mct_logger.keras_post_training_quantization(model, data[form])
    assert info.stage_results["statistics_collection"].num_samples == 70


# ------------------------------------------------ inputs in the wrong order


@pytest.mark.parametrize("container", [list, tuple])
def test_whole_arrays_in_the_wrong_order_name_the_input_and_the_shape_it_got(container):
    x, v = _images(6), np.ones((6, 3), "float32")
    with pytest.raises(RepresentativeDataError,
                       match=r"input 'img' expects \(batch, 4, 4, 1\) but got an array of "
                             r"shape \(6, 3\)\. It fits input 'vec'"):
        load_batches(container([v, x]), TWO)


def test_whole_array_of_a_wrong_shape_names_its_input():
    x = _images(6)
    with pytest.raises(RepresentativeDataError, match=r"input 'vec' expects \(batch, 3\).*\(6, 5\)"):
        load_batches([x, np.ones((6, 5), "float32")], TWO)


# ------------------------------------------------ finiteness after the cast


def test_float64_beyond_float32_range_is_refused_before_any_work():
    x = _images(4).astype("float64")
    x[1, 0, 0, 0] = 1e39  # finite in float64, Inf in the float32 model
    with pytest.raises(RepresentativeDataError, match=r"input 'img'.*beyond the range of float32"):
        load_batches(x, ONE)


def test_values_beyond_a_float16_input_are_refused():
    spec = [InputSpec("img", (None, 4, 4, 1), "float16")]
    x = _images(4)
    x[0] = 1e5
    with pytest.raises(RepresentativeDataError, match="beyond the range of float16"):
        load_batches([x], spec)
    assert load_batches([_images(4)], spec)[0][0].dtype == np.float16


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_ml_dtypes_floats_are_cast_to_the_input_dtype_and_checked(dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = _images(6).astype(getattr(ml_dtypes, dtype))
    batches = load_batches(x, ONE)
    assert batches[0][0].dtype == np.float32
    np.testing.assert_array_equal(batches[0][0], x.astype("float32"))
    x[2] = np.nan
    with pytest.raises(RepresentativeDataError, match=r"input 'img' holds \d+ NaN or Inf"):
        load_batches(x, ONE)
    as_tf = tf.data.Dataset.from_tensor_slices(_images(6)).batch(3).map(
        lambda t: tf.cast(t, tf.bfloat16))
    assert [b[0].dtype for b in load_batches(as_tf, ONE)] == [np.float32] * 2


def test_int4_is_no_float_but_structured_data_is_still_refused():
    from mct_logger.data.batch_check import is_float
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert not is_float(np.dtype(ml_dtypes.int4)) and is_float(np.dtype(ml_dtypes.bfloat16))
    with pytest.raises(RepresentativeDataError, match="has dtype .* Convert it to numbers"):
        load_batches(np.zeros((2, 4, 4, 1), dtype=[("a", "f4")]), ONE)


def test_batches_with_inputs_in_the_wrong_order_name_the_input_and_the_shape_it_got():
    x, v = _images(6), np.ones((6, 3), "float32")
    with pytest.raises(RepresentativeDataError,
                       match=r"batch 1, input 'img' expects \(batch, 4, 4, 1\) but got an "
                             r"array of shape \(6, 3\)\. It fits input 'vec'"):
        load_batches(lambda: iter([[x, v], [v, x]]), TWO)


def test_samples_beyond_the_cap_are_not_read():
    x = _images(12)
    x[10] = np.nan  # past the cap: never used, so never refused
    batches = load_batches(x, ONE, batch_size=4, max_samples=8)
    assert sum(len(b[0]) for b in batches) == 8
    with pytest.raises(RepresentativeDataError, match="NaN or Inf"):
        load_batches(x, ONE, batch_size=4, max_samples=11)


# ------------------------------------------------ first_batches (enable_per_layer_mse_loss)


_X, _Y, _V = _images(70), np.arange(70), np.ones((70, 3), "float32")


@pytest.mark.parametrize("specs,data", [
    (ONE, _X), (ONE, (_X, _Y)), (ONE, [_X, _Y]), (ONE, ({"img": _X}, None)),
    (TWO, [_X, _V]), (TWO, (_X, _V)), (TWO, {"img": _X, "vec": _V}), (TWO, ((_X, _V), _Y)),
    (TWO, ([_X, _V], _Y, np.ones(70))),
], ids=["array", "xy", "xy-list", "dict-x-none", "list", "tuple", "dict", "nested-xy", "xyw"])
def test_first_batches_takes_every_whole_array_form_ptq_takes(specs, data):
    batches = first_batches(data, specs, 2)
    assert [len(b[0]) for b in batches] == [32, 32]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), _X[:64])
    if specs is TWO:
        assert [b[1].shape for b in batches] == [(32, 3), (32, 3)]
    assert [len(b[0]) for b in first_batches(data, specs, 5)] == [32, 32, 6]


def test_first_batches_refuses_whole_arrays_in_the_wrong_order_naming_the_input():
    with pytest.raises(RepresentativeDataError,
                       match=r"input 'img' expects \(batch, 4, 4, 1\) but got an array of "
                             r"shape \(70, 3\)\. It fits input 'vec'"):
        first_batches([_V, _X], TWO, 2)


def test_first_batches_refuses_a_callable_that_takes_arguments():
    with pytest.raises(RepresentativeDataError, match=r"callable that takes arguments \(m\)"):
        first_batches(lambda m: m.predict(_X), ONE, 2)


def test_first_batches_reads_no_further_than_needed_even_from_endless_data():
    read = []

    def endless():
        while True:
            read.append(1)
            yield _X[:8]
    assert len(first_batches(endless(), ONE, 3)) == 3 and len(read) == 3
    repeated = tf.data.Dataset.from_tensor_slices(_X).batch(8).repeat()
    assert [len(b[0]) for b in first_batches(repeated, ONE, 2)] == [8, 8]


def _raises_at_batch_2():
    for i in range(4):
        if i == 2:
            raise OSError("disk read failed")
        yield _X[i * 8:(i + 1) * 8]


@pytest.mark.parametrize("read", [
    lambda data: load_batches(data, ONE), lambda data: first_batches(data, ONE, 3),
    lambda data: CalibrationBatches(data, ONE)], ids=["load_batches", "first_batches", "streamed"])
def test_an_error_raised_while_reading_keeps_its_type_and_names_the_batch(read):
    with pytest.raises(OSError, match="disk read failed") as caught:
        read(_raises_at_batch_2())
    assert "(raised while reading representative_data batch 2)" in caught.value.__notes__
    with pytest.raises(ZeroDivisionError) as caught:
        read(lambda: 1 / 0)
    assert "(raised while calling representative_data)" in caught.value.__notes__


def test_errors_name_the_argument_of_the_entry_point():
    with pytest.raises(RepresentativeDataError, match=r"^dummy_input, input 'img' expects"):
        load_batches([_V, _X], TWO, name="dummy_input")
    with pytest.raises(RepresentativeDataError, match=r"^dummy_input is one array but"):
        load_batches(_X, TWO, name="dummy_input")
    with pytest.raises(RepresentativeDataError, match=r"^unlabeled_data batch 1 is a NoneType"):
        first_batches(iter([_X[:8], None]), ONE, 2, name="unlabeled_data")
    with pytest.raises(RepresentativeDataError, match=r"^unlabeled_data is a callable that takes"):
        first_batches(lambda m: m, ONE, 2, name="unlabeled_data")
    with pytest.raises(RepresentativeDataError, match=r"^unlabeled_data looks like \(x, y\)"):
        first_batches((_X, _Y[:5]), ONE, 2, name="unlabeled_data")
    with pytest.raises(RepresentativeDataError, match=r"^unlabeled_data is empty"):
        first_batches([], ONE, 2, name="unlabeled_data")
    with pytest.raises(OSError) as caught:
        first_batches(_raises_at_batch_2(), ONE, 3, name="unlabeled_data")
    assert "(raised while reading unlabeled_data batch 2)" in caught.value.__notes__
