"""transfer_learning.member, .loading, .ensemble: members, stages, the trunk-sharing Ensemble, SavedModel members."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_learning.ensemble import Ensemble, for_inference, split_member, trunk_fingerprint
from transfer_learning.loading import load_member
from transfer_learning.member import (SPLIT_LAYER, BackbonePreprocess, MemberError, base_layers,
                                      build_member, calibrate_batchnorm, save_base_init, set_stage,
                                      stage_layers, with_global_batchnorm)
from common.batchnorm import GlobalBatchNormalization

SIZE = 64  # DenseNet's pool4 output is 2x2 here: a real spatial tail, still cheap


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two DenseNet121 members from ONE saved random base, each with its own head seed."""
    init = save_base_init(tmp_path_factory.mktemp("init") / "base.weights.h5", "DenseNet121", SIZE, seed=7)
    return [build_member("DenseNet121", SIZE, str(init), dense_units=16, seed=s, name=f"m{s}")
            for s in (1, 2)]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((5, SIZE, SIZE, 3)).astype(np.float32)


def one_by_one(members, images):
    return np.concatenate([m(images, training=False).numpy() for m in members], axis=1)


@pytest.fixture(scope="module")
def expected(members, images):
    return one_by_one(members, images)


@pytest.fixture(scope="module")
def ensemble(members):
    return Ensemble(members)


def test_member_has_the_original_head_and_its_backbones_own_preprocessing(members):
    member = members[0]
    kinds = [type(layer).__name__ for layer in member.layers[-8:]]
    assert kinds == ["Flatten"] + ["Dropout", "Dense"] * 3 + ["Dense"]
    assert [member.get_layer(f"head_dense_{i}").units for i in (1, 2, 3)] == [16, 16, 16]
    assert member.get_layer("score").activation.__name__ == "sigmoid"
    assert len(member.losses) == 3  # the L2 of each head Dense reaches the loss
    x = np.random.default_rng(1).random((2, 8, 8, 3)).astype(np.float32)
    expected = keras.applications.densenet.preprocess_input(x * 255.0)
    np.testing.assert_allclose(BackbonePreprocess("DenseNet121")(x).numpy(), expected, rtol=1e-6)
    assert member.get_layer("preprocess").backbone == "DenseNet121"


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(MemberError, match="not a keras.applications model"):
        build_member("DenseNet999", SIZE, None)


def test_members_from_one_saved_init_share_the_trunk_bit_for_bit(members, expected):
    prints = {trunk_fingerprint(split_member(m)[0]) for m in members}
    assert len(prints) == 1
    assert np.abs(expected[:, 0] - expected[:, 1]).max() > 1e-4  # the heads differ


def test_stages_unfreeze_only_conv5_never_the_shared_trunk(members):
    member = members[0]
    trunk_names = {layer.name for layer in split_member(member)[0].layers}
    blocks = 16  # DenseNet121's conv5
    try:
        assert set_stage(member, 0) == 0
        assert {w.path.split("/")[0] for w in member.trainable_weights} == {
            "head_dense_1", "head_dense_2", "head_dense_3", "score"}
        one = stage_layers(member, 1)
        assert one[:-2] and all(n.startswith(f"conv5_block{blocks}_") for n in one[:-2])
        assert one[-2:] == ["bn", "relu"]
        two = stage_layers(member, 2)
        assert {n.split("_")[1] for n in two[:-2]} == {f"block{b}" for b in range(3, blocks + 1)}
        three = stage_layers(member, 3)
        assert set(three) >= set(two) | {"conv5_block1_0_bn", "conv5_block2_2_conv", "bn"}
        for stage in (1, 2, 3):
            set_stage(member, stage)
            assert not trunk_names & {layer.name for layer in member.layers if layer.trainable
                                      and layer.weights}
    finally:
        set_stage(member, 0)


def original_unfreeze_layers(names, increment, key="conv5_block32_"):
    """The original's unfreeze_layers(increment), transcribed: from the first layer whose name
    starts with key[:-increment] to the end."""
    chosen, on = [], False
    for name in names:
        if name[:len(key) - increment] == key[:-increment]:
            on = True
        if on:
            chosen.append(name)
    return chosen


def test_stage_sets_are_the_originals_unfreeze_layers(members):
    member = members[0]
    names = [layer.name for layer in base_layers(member)]
    # DenseNet201's last conv5 block is 32, DenseNet121's 16: stage 1 is the last block of either.
    assert stage_layers(member, 1) == original_unfreeze_layers(names, 1, key="conv5_block16_")
    assert stage_layers(member, 2) == original_unfreeze_layers(names, 2)  # 'conv5_block3': blocks 3..16
    assert stage_layers(member, 3) == original_unfreeze_layers(names, 3)  # 'conv5_block': all of conv5
    for stage in (1, 2, 3):
        assert stage_layers(member, stage)[-2:] == ["bn", "relu"]  # the final BatchNorm trains too
    assert stage_layers(member, 2)[0] == "conv5_block3_0_bn" and stage_layers(member, 3)[0] == "conv5_block1_0_bn"
    assert stage_layers(member, 0) == []


def test_unfrozen_batchnorm_keeps_its_statistics_in_inference_mode_and_learns_them_in_train_mode(tmp_path):
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(5).random((8, 32, 32, 3)).astype(np.float32)
    labels = np.array([[0], [1]] * 4, np.float32)
    # MobileNet (few layers: fast); its stage 3 is its last 10 % of layers, BatchNorms among them.
    member = build_member("MobileNet", 32, "none", dense_layers=1, dense_units=4, seed=0)
    calibrate_batchnorm(member, images)  # a random base passes signal only with real statistics
    unfrozen = stage_layers(member, 3)
    norms = [n for n in unfrozen if isinstance(member.get_layer(n), keras.layers.BatchNormalization)]
    conv = next(n for n in unfrozen if isinstance(member.get_layer(n), keras.layers.Conv2D))
    assert len(norms) >= 2 and norms[-1] == "conv_pw_13_bn"  # the last BatchNorm of the base

    def state(model):
        return [w.numpy().copy() for n in norms for w in model.get_layer(n).weights]

    for mode in ("inference", "train"):
        model = with_global_batchnorm(member) if mode == "train" else member
        assert set_stage(model, 3, mode) == len(unfrozen)
        trainable = {layer.name for layer in base_layers(model) if layer.trainable}
        assert trainable == set(unfrozen) - (set(norms) if mode == "inference" else set())
        features = keras.Model(model.input, model.get_layer(norms[-1]).output)
        model.compile(keras.optimizers.RMSprop(1e-3), "binary_crossentropy")
        before, kernel = state(model), model.get_layer(conv).kernel.numpy().copy()
        model.train_on_batch(images, labels)
        assert not np.array_equal(kernel, model.get_layer(conv).kernel.numpy())  # it trained
        moved = [not np.array_equal(a, b) for a, b in zip(before, state(model))]
        in_training = features(images, training=True).numpy()
        in_inference = features(images, training=False).numpy()
        if mode == "inference":
            assert not any(moved)  # moving mean and variance (and scale, offset) untouched
            np.testing.assert_array_equal(in_training, in_inference)
        else:
            assert all(moved)  # gamma, beta, moving mean, moving variance of both layers
            assert np.abs(in_training - in_inference).max() > 1e-3  # batch statistics
            assert all(type(model.get_layer(n)) is GlobalBatchNormalization for n in norms)
            assert type(model.get_layer("conv1_bn")) is keras.layers.BatchNormalization  # trunk as it was
            # A member with global BatchNorm layers saves and loads as a member.
            model.save(tmp_path / "member.keras")
            loaded = load_member(tmp_path / "member.keras").model
            assert type(loaded.get_layer(norms[-1])) is GlobalBatchNormalization
            np.testing.assert_allclose(loaded(images, training=False).numpy(),
                                       model(images, training=False).numpy(), atol=1e-6)
    # The global BatchNorm copy computes what the stock one does (inference, before any training).
    np.testing.assert_allclose(with_global_batchnorm(member)(images, training=False).numpy(),
                               member(images, training=False).numpy(), atol=1e-5)


def test_shared_trunk_ensemble_equals_members_one_by_one(ensemble, images, expected):
    assert ensemble.shared and len(ensemble.sources) == 1
    assert [h.name for h in ensemble.heads] == ["m1_tail", "m2_tail"]
    # Pass 1 (member 0) runs the trunk once; pass 2 (member 1) reuses its features.
    features, first = ensemble.run(images, [0])
    second = ensemble.scores([1], features=features)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), expected, atol=1e-5)
    rows = [1, 3, 4]  # pass 1's survivors only
    np.testing.assert_allclose(ensemble.scores([1], features=Ensemble.select(features, rows)).numpy(),
                               expected[rows, 1:], atol=1e-5)
    # Calls of 4 images (2 parallel branches of 2) then 1 (one branch): the same scores.
    ensemble.micro_batch, ensemble.streams = 4, 2
    try:
        features, first = ensemble.run(images, [0])
        np.testing.assert_allclose(first.numpy(), expected[:, :1], atol=1e-5)
        np.testing.assert_allclose(ensemble.scores([1], features=features).numpy(), expected[:, 1:],
                                   atol=1e-5)
        assert {key[2] for key in ensemble._functions if key[0] == "run"} == {1, 2}  # the 1-image call: 1 branch
    finally:
        ensemble.micro_batch, ensemble.streams = 0, 1


@pytest.mark.slow
def test_member_from_another_init_runs_whole_and_still_matches(members, images, expected, caplog):
    stranger = keras.models.clone_model(members[1])
    stranger.set_weights(members[1].get_weights())
    kernel = stranger.get_layer("conv1_conv").kernel
    kernel.assign(kernel * 1.01)  # another "initialisation" of the frozen trunk
    with caplog.at_level(logging.WARNING, logger="transfer_learning.ensemble"):
        mixed = Ensemble([members[0], members[1], stranger])
    assert "matches no other member" in caplog.text
    assert mixed.heads[2] is stranger and [h.name for h in mixed.heads[:2]] == ["m1_tail", "m2_tail"]
    scores = mixed(images)
    np.testing.assert_allclose(scores[:, :2], expected, atol=1e-5)
    np.testing.assert_allclose(scores[:, 2:], stranger(images, training=False).numpy(), atol=1e-5)
    assert np.abs(scores[:, 2] - scores[:, 1]).max() > 1e-6  # it really is another trunk
    assert not Ensemble(members, share_trunk=False).shared


def test_mixed_bfloat16_member_keeps_a_float32_score_close_to_float32(members, images, expected):
    fast = for_inference(members[0], "mixed_bfloat16")
    assert fast.get_layer("conv1_conv").dtype_policy.name == "mixed_bfloat16"
    assert fast.get_layer("score").dtype_policy.name == "float32"
    assert fast.get_layer("preprocess").dtype_policy.name == "float32"
    scores = fast(images, training=False)
    assert scores.dtype == "float32"
    np.testing.assert_allclose(scores.numpy(), expected[:, :1], atol=2e-2)


def test_inference_copy_runs_fused_batchnorm_and_scores_the_same(members, images, expected):
    copy = for_inference(members[0], "float32")
    norms = [layer for layer in copy.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(layer, GlobalBatchNormalization) for layer in norms)
    assert copy is not members[0] and copy.count_params() == members[0].count_params()
    np.testing.assert_allclose(copy(images, training=False).numpy(), expected[:, :1], atol=1e-5)
    graph = tf.function(lambda x: copy(x, training=False)).get_concrete_function(
        tf.TensorSpec((None,) + tuple(images.shape[1:]), tf.float32)).graph
    assert any(op.type.startswith("FusedBatchNorm") for op in graph.get_operations())
    # Sharing the trunk still works on the copies: same weights, same fingerprint.
    ensemble = Ensemble([for_inference(m) for m in members])
    assert ensemble.shared
    np.testing.assert_allclose(ensemble(images), expected, atol=1e-5)


def test_split_needs_a_layer_that_cuts_the_network():
    tiny = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(name="flat"),
                             keras.layers.Dense(1, activation="sigmoid")])
    with pytest.raises(ValueError):
        split_member(tiny, SPLIT_LAYER)


def _small_member():
    inputs = keras.Input((32, 32, 3), name="images")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="score")(x))


@pytest.mark.parametrize("export", ["tf.saved_model.save", "model.export"])
def test_savedmodel_folder_loads_as_a_member_through_tfsmlayer(tmp_path, export):
    keras.utils.set_random_seed(3)
    model = _small_member()
    folder = tmp_path / "original_member"  # like the original project's published folders
    if export == "model.export":
        model.export(str(folder), verbose=False)
    else:
        tf.saved_model.save(model, str(folder))
    member = load_member(folder)
    assert member.kind == "savedmodel" and member.image_size == 32
    assert any(isinstance(layer, keras.layers.TFSMLayer) for layer in member.model.layers)
    x = np.random.default_rng(2).random((3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(member.model(x).numpy(), model(x).numpy(), atol=1e-6)
    ensemble = Ensemble([member.model, model])
    assert not ensemble.shared
    np.testing.assert_allclose(ensemble(x)[:, 0], ensemble(x)[:, 1], atol=1e-6)


def test_loading_a_missing_or_broken_member_names_it(tmp_path):
    with pytest.raises(MemberError, match="no such member"):
        load_member(tmp_path / "nope.keras")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(MemberError, match="broken.keras: cannot load"):
        load_member(broken)


def test_a_random_base_passes_signal_only_with_calibrated_batchnorm(tmp_path):
    images = np.random.default_rng(4).random((32, 32, 32, 3)).astype(np.float32)
    member = build_member("MobileNet", 32, None, dense_units=4)
    features = keras.Model(member.input, member.get_layer("head_flatten").output)
    assert features(images).numpy().std() < 1e-6  # default statistics: the signal vanishes
    assert calibrate_batchnorm(features, images) > 10
    assert 0.1 < features(images).numpy().std() < 10
    assert not any(layer.trainable for layer in features.layers
                   if isinstance(layer, keras.layers.BatchNormalization))  # still frozen
    # save_base_init keeps the calibrated statistics for every member built from it.
    init = save_base_init(tmp_path / "base.weights.h5", "MobileNet", 32, seed=1, images=images)
    rebuilt = build_member("MobileNet", 32, str(init), dense_units=4)
    assert keras.Model(rebuilt.input, rebuilt.get_layer("head_flatten").output)(images).numpy().std() > 0.1


def test_members_with_bare_operations_are_scored_in_any_precision():
    # MobileNetV3's hard-swish writes `x + 3`: a keras.ops Add node in the graph, not a layer,
    # which takes no dtype (it crashed for_inference). It follows its inputs' dtype instead.
    from transfer_learning.ensemble import for_inference

    inputs = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x + 3.0)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="score")(x))
    images = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    expected = np.asarray(model(images, training=False))
    for precision, tolerance in (("float32", 1e-5), ("mixed_bfloat16", 2e-2)):
        scored = for_inference(model, precision)
        assert scored.get_layer("conv").compute_dtype == ("float32" if precision == "float32" else "bfloat16")
        np.testing.assert_allclose(np.asarray(scored(images, training=False)), expected, atol=tolerance)


@pytest.mark.parametrize("backbone", ["MobileNetV3Small", "EfficientNetB0"])
def test_members_of_other_backbones_go_through_the_engine(backbone):
    member = build_member(backbone, 32, "none", dense_layers=1, dense_units=8, seed=0, name="m")
    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(member(images, training=False))
    ensemble = Ensemble([for_inference(member, "mixed_bfloat16"), for_inference(member, "float32")])
    _, scores = ensemble.run(tf.constant(images), [0, 1])
    np.testing.assert_allclose(np.asarray(scores)[:, 1], expected[:, 0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores)[:, 0], expected[:, 0], atol=2e-2)
