import pytest
import torch

from nlpseq.errors import ConfigError
from nlpseq.nn.decoders import DecoderState, RecurrentDecoder
from nlpseq.nn.search import select_state

IN, H, M, E = 5, 6, 6, 7  # input, hidden, memory (= H so luong_dot works), encoder final sizes
ATTENTION = (None, "bahdanau", "luong_dot", "luong_general")
CONFIGS = [(att, feed, cell) for att in ATTENTION for feed in (False, True) for cell in ("lstm", "gru")
           if not (att is None and feed)]
CONFIG_IDS = [f"{att}-{'feed' if feed else 'nofeed'}-{cell}" for att, feed, cell in CONFIGS]


def make(attention, input_feeding=False, cell="lstm", num_layers=2, **kw) -> RecurrentDecoder:
    torch.manual_seed(0)
    dec = RecurrentDecoder(IN, H, num_layers=num_layers, cell=cell, dropout=0.3, attention=attention,
                           memory_size=M if attention else None, input_feeding=input_feeding,
                           encoder_final_size=E, **kw)
    return dec.double().eval()


def batch(B=3, T=5, S=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, IN, generator=g, dtype=torch.double),
            torch.randn(B, E, generator=g, dtype=torch.double),
            torch.randn(B, S, M, generator=g, dtype=torch.double))


def start(dec, final, memory, mask=None):
    if dec.attention is None:
        return dec.init_state(final.size(0), final)
    return dec.init_state(final.size(0), final, memory, mask)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def close_states(a: DecoderState, b: DecoderState):
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            close(x, y)


@pytest.mark.parametrize("attention,input_feeding,cell", CONFIGS, ids=CONFIG_IDS)
def test_step_loop_equals_forward(attention, input_feeding, cell):
    dec = make(attention, input_feeding, cell)
    x, final, memory = batch()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    state = start(dec, final, memory, mask)
    outputs, end_state, weights = dec(x, state)
    assert outputs.shape == (3, 5, dec.output_size)
    step_state, step_weights = state, []
    for t in range(x.size(1)):
        out, step_state, w = dec.step(x[:, t], step_state)
        close(out, outputs[:, t])
        step_weights.append(w)
    close_states(step_state, end_state)
    if attention is None:
        assert weights is None and step_weights[0] is None
    else:
        close(torch.stack(step_weights, 1), weights)
        assert weights.shape == (3, 5, 4) and torch.all(weights[~mask.unsqueeze(1).expand_as(weights)] == 0)


@pytest.mark.parametrize("attention,input_feeding,cell", CONFIGS, ids=CONFIG_IDS)
def test_padding_invariance(attention, input_feeding, cell):
    dec = make(attention, input_feeding, cell)
    x, final, memory = batch(B=3, T=6, S=5)
    lengths, src_lengths = torch.tensor([6, 2, 4]), torch.tensor([3, 5, 1])
    mask = torch.arange(5).unsqueeze(0) < src_lengths.unsqueeze(1)
    # padded positions hold junk: it must not matter
    x = torch.where((torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1), x, 100.0)
    memory = torch.where(mask.unsqueeze(-1), memory, -100.0)
    outputs, end_state, weights = dec(x, start(dec, final, memory, mask), lengths)
    for b in range(3):
        n, s = int(lengths[b]), int(src_lengths[b])
        alone = start(dec, final[b:b + 1], memory[b:b + 1, :s])
        out, state, w = dec(x[b:b + 1, :n], alone)
        close(outputs[b:b + 1, :n], out)
        assert torch.all(outputs[b, n:] == 0)
        close(end_state.hidden[b:b + 1], state.hidden)
        if cell == "lstm":
            close(end_state.cell[b:b + 1], state.cell)
        if input_feeding:
            close(end_state.feed[b:b + 1], state.feed)
        if attention is not None:
            close(weights[b:b + 1, :n, :s], w)
            assert torch.all(weights[b, :, s:] == 0) and torch.all(weights[b, n:] == 0)


@pytest.mark.parametrize("attention,input_feeding,cell", CONFIGS, ids=CONFIG_IDS)
def test_carried_state_continues_the_sequence(attention, input_feeding, cell):
    dec = make(attention, input_feeding, cell)
    x, final, memory = batch(T=7)
    state = start(dec, final, memory)
    whole, whole_state, whole_w = dec(x, state)
    first, mid_state, _ = dec(x[:, :3], state)
    mid_state = DecoderState(*(t.detach() if t is not None else None for t in mid_state))  # truncated BPTT
    second, end_state, second_w = dec(x[:, 3:], mid_state)
    close(torch.cat([first, second], 1), whole)
    close_states(end_state, whole_state)
    if attention is not None:
        close(second_w, whole_w[:, 3:])


@pytest.mark.parametrize("attention,input_feeding,cell", CONFIGS, ids=CONFIG_IDS)
def test_empty_rows_keep_their_state(attention, input_feeding, cell):
    dec = make(attention, input_feeding, cell)
    x, final, memory = batch()
    state = start(dec, final, memory)
    outputs, end_state, _ = dec(x, state, torch.tensor([5, 0, 2]))
    assert torch.all(outputs[1] == 0)
    close_states(select_state(end_state, torch.tensor([1])), select_state(state, torch.tensor([1])))
    close(outputs[2:, :2], dec(x[2:, :2], select_state(state, torch.tensor([2])))[0])


def test_gradient_flows_without_nan():
    dec = make("bahdanau", True).float().train()
    x, final, memory = (t.float() for t in batch())
    memory.requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)  # one empty source
    outputs, _, _ = dec(x, dec.init_state(3, final, memory, mask), torch.tensor([5, 3, 1]))
    outputs.sum().backward()
    assert all(not torch.isnan(p.grad).any() for p in dec.parameters() if p.grad is not None)
    assert not torch.isnan(memory.grad).any()


def test_dropout_is_active_in_training_only():
    dec = make("luong_general")
    x, final, memory = batch()
    state = start(dec, final, memory)
    close(dec(x, state)[0], dec(x, state)[0])
    dec.train()
    assert not torch.equal(dec(x, state)[0], dec(x, state)[0])


@pytest.mark.parametrize("attention,input_feeding,cell", [CONFIGS[0], CONFIGS[2], CONFIGS[-1]])
def test_selected_state_steps_like_the_selected_rows(attention, input_feeding, cell):
    # what beam search relies on: reordering/expanding the state commutes with stepping
    dec = make(attention, input_feeding, cell)
    x, final, memory = batch()
    state = start(dec, final, memory)
    _, state, _ = dec(x[:, :2], state)
    index = torch.tensor([2, 2, 0, 1, 0])
    out, new_state, _ = dec.step(x[index, 2], select_state(state, index))
    ref_out, ref_state, _ = dec.step(x[:, 2], state)
    close(out, ref_out[index])
    close_states(new_state, select_state(ref_state, index))


@pytest.mark.parametrize("cell", ("lstm", "gru", "rnn"))
def test_bridges(cell):
    final = torch.randn(4, E, dtype=torch.double)
    lstm = cell == "lstm"
    dec = make(None, cell=cell, num_layers=3, bridge="linear")
    state = dec.init_state(4, final)
    assert state.hidden.shape == (4, 3, H)
    assert (state.cell.shape == (4, 3, H)) if lstm else state.cell is None
    assert state.memory is state.memory_mask is state.projected_keys is state.feed is None
    assert not torch.all(state.hidden == 0) and state.hidden.abs().max() < 1  # tanh

    state = make(None, cell=cell, bridge="zero").init_state(4, final)
    assert torch.all(state.hidden == 0) and (torch.all(state.cell == 0) if lstm else state.cell is None)

    torch.manual_seed(0)
    dec = RecurrentDecoder(IN, H, num_layers=2, cell=cell, bridge="none", encoder_final_size=H).double()
    final_h = torch.randn(4, H, dtype=torch.double)
    state = dec.init_state(4, final_h)
    close(state.hidden, final_h.unsqueeze(1).expand(4, 2, H))

    # a language model: no encoder at all, zero start whatever the bridge
    lm = RecurrentDecoder(IN, H, cell=cell)
    state = lm.init_state(2)
    assert state.hidden.shape == (2, 1, H) and torch.all(state.hidden == 0)
    out, state, weights = lm(torch.randn(2, 3, IN), state)
    assert out.shape == (2, 3, lm.output_size) and weights is None


def test_attention_state_layout():
    dec = make("luong_general", input_feeding=True)
    _, final, memory = batch(B=2, S=3)
    state = dec.init_state(2, final, memory)
    assert state.memory_mask.dtype == torch.bool and state.memory_mask.all() and state.memory_mask.shape == (2, 3)
    assert state.projected_keys.shape == (2, 3, H) and state.feed.shape == (2, H)
    assert all(t.size(0) == 2 for t in state if t is not None)


@pytest.mark.parametrize("kwargs,key", [
    (dict(cell="lstmx"), "cell"),
    (dict(attention="concat", memory_size=M), "attention"),
    (dict(attention="bahdanau"), "memory_size"),
    (dict(attention="luong_dot", memory_size=M + 1), "attention"),
    (dict(input_feeding=True), "input_feeding"),
    (dict(attention="bahdanau", memory_size=M, input_feeding="yes"), "input_feeding"),
    (dict(bridge="mlp"), "bridge"),
    (dict(bridge="none", encoder_final_size=H + 1), "bridge"),
    (dict(encoder_final_size=0), "encoder_final_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(num_layers=0), "num_layers"),
    (dict(attention="bahdanau", memory_size=M, attention_hidden_size=0), "attention_hidden_size"),
])
def test_bad_settings_name_the_argument(kwargs, key):
    with pytest.raises(ConfigError) as err:
        RecurrentDecoder(IN, H, **kwargs)
    assert err.value.key == key


def test_misuse_of_init_state():
    _, final, memory = batch()
    with pytest.raises(ValueError, match="memory"):
        make("bahdanau").init_state(3, final)
    with pytest.raises(ValueError, match="no attention"):
        make(None).init_state(3, final, memory)
    with pytest.raises(ValueError, match="encoder_final"):
        make(None).init_state(3)


@pytest.mark.parametrize("kind,layers,bias", [("lstm", 1, True), ("lstm", 3, True), ("gru", 2, True),
                                              ("gru", 2, False), ("rnn_tanh", 2, True), ("rnn_relu", 1, False)])
def test_rnn_step_equals_a_one_token_rnn_call(kind, layers, bias):
    # the decoder's fused per-layer cell path against nn.LSTM/GRU/RNN on a one-token sequence: eval mode
    # (inter-layer dropout off) and, with dropout 0, training mode including gradients
    from nlpseq.nn.decoders import rnn_step

    torch.manual_seed(0)
    for dropout, train in ((0.4 if layers > 1 else 0.0, False), (0.0, True)):
        if kind.startswith("rnn"):
            rnn = torch.nn.RNN(5, 6, layers, nonlinearity=kind[4:], bias=bias, batch_first=True, dropout=dropout)
        else:
            rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](5, 6, layers, bias=bias, batch_first=True,
                                                                   dropout=dropout)
        rnn = rnn.double().train(train)
        x = torch.randn(4, 5, dtype=torch.double)
        h = torch.randn(layers, 4, 6, dtype=torch.double)
        c = torch.randn(layers, 4, 6, dtype=torch.double) if kind == "lstm" else None
        grads = []
        for fast in (True, False):
            rnn.zero_grad()
            if fast:
                out, hs, cs = rnn_step(rnn, x, list(h.unbind(0)), None if c is None else list(c.unbind(0)))
                states = [torch.stack(hs)] + ([torch.stack(cs)] if cs is not None else [])
            else:
                out, hx = rnn(x.unsqueeze(1), h if c is None else (h, c))
                out, states = out[:, 0], list(hx) if c is not None else [hx]
            (out.sum() + sum(s.square().sum() for s in states)).backward()
            grads.append((out, states, [p.grad.clone() for p in rnn.parameters()]))
        (out, states, g), (ref, ref_states, ref_g) = grads
        close(out, ref)
        for a, b in zip(states, ref_states):
            close(a, b)
        for a, b in zip(g, ref_g):
            close(a, b)


def test_rnn_step_dropout_between_layers_in_training_only():
    from nlpseq.nn.decoders import rnn_step

    rnn = torch.nn.LSTM(5, 6, 2, batch_first=True, dropout=0.5).train()
    x, h, c = torch.randn(3, 5), [torch.zeros(3, 6)] * 2, [torch.zeros(3, 6)] * 2
    assert not torch.equal(rnn_step(rnn, x, h, c)[0], rnn_step(rnn, x, h, c)[0])
    rnn.eval()
    assert torch.equal(rnn_step(rnn, x, h, c)[0], rnn_step(rnn, x, h, c)[0])


@pytest.mark.parametrize("attention,input_feeding", [("bahdanau", False), ("luong_general", True)])
def test_teacher_forced_loop_gradients_match_the_step_path(attention, input_feeding):
    # training runs the time loop through the same cell path: gradients of forward == of a manual step loop
    dec = make(attention, input_feeding, "gru")
    dec.train()
    dec.dropout.p = 0.0
    dec.rnn.dropout = 0.0
    x, final, memory = batch()
    grads = []
    for manual in (False, True):
        dec.zero_grad()
        state = start(dec, final, memory)
        if manual:
            outs = []
            for t in range(x.size(1)):
                out, state, _ = dec.step(x[:, t], state)
                outs.append(out)
            outputs = torch.stack(outs, 1)
        else:
            outputs, _, _ = dec(x, state)
        outputs.square().sum().backward()
        grads.append([p.grad.clone() for p in dec.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        close(a, b)


# ---- prepared (search) states: the memory projected once, each step mixing the projections ----

PREPARED = CONFIGS + [("bahdanau", True, "rnn"), ("luong_general", False, "rnn")]


@pytest.mark.parametrize("attention,input_feeding,cell", PREPARED,
                         ids=[f"{a}-{'feed' if f else 'nofeed'}-{c}" for a, f, c in PREPARED])
def test_prepared_state_steps_like_the_plain_one(attention, input_feeding, cell):
    dec = make(attention, input_feeding, cell)
    x, final, memory = batch()
    mask = torch.tensor([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    plain = start(dec, final, memory, mask)
    prepared = dec.prepare_search(plain)
    if attention is None:
        assert prepared is plain
        return
    assert prepared.memory_combine.shape == (3, 4, H)
    assert (prepared.memory_gates is not None) == (attention == "bahdanau")
    for t in range(x.size(1)):
        out, plain, w = dec.step(x[:, t], plain)
        ref_out, prepared, ref_w = dec.step(x[:, t], prepared)
        torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
        torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-10)
        torch.testing.assert_close(plain.hidden, prepared.hidden, rtol=0, atol=1e-10)
    assert not w[1, 2:].any() and not w[2, 1:].any()  # padding still gets no weight


@pytest.mark.parametrize("attention,input_feeding,cell", [("bahdanau", False, "gru"), ("bahdanau", True, "lstm"),
                                                          ("luong_general", True, "gru")])
def test_prepared_memory_is_shared_by_groups_of_rows(attention, input_feeding, cell):
    # beam search: K rows per sentence (different hidden states) over one row of memory per sentence give
    # what the plain step gives with the memory copied to every row
    dec = make(attention, input_feeding, cell)
    x, final, memory = batch(B=2, S=4)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    K = 3
    rows = torch.arange(2).repeat_interleave(K)
    state = start(dec, final, memory, mask)
    _, state, _ = dec(x[:, :2], state)
    expanded = select_state(state, rows)
    expanded = expanded._replace(hidden=expanded.hidden + 0.1 * torch.randn_like(expanded.hidden))
    prepared = dec.prepare_search(state)
    grouped = expanded._replace(**{f: getattr(prepared, f) for f in ("memory", "memory_mask", "projected_keys",
                                                                     "memory_gates", "memory_combine")})
    inputs = torch.randn(2 * K, IN, dtype=torch.double)
    ref_out, ref_state, ref_w = dec.step(inputs, expanded)
    out, new_state, w = dec.step(inputs, grouped)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-10)
    torch.testing.assert_close(new_state.hidden, ref_state.hidden, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="cannot share"):
        dec.step(inputs[:5], grouped._replace(hidden=grouped.hidden[:5],
                                              cell=None if grouped.cell is None else grouped.cell[:5]))


@pytest.mark.parametrize("kind,layers,bias", [("lstm", 2, True), ("gru", 1, True), ("gru", 2, False),
                                              ("rnn_tanh", 1, True), ("rnn_relu", 2, True)])
def test_rnn_step_from_precomputed_first_gates(kind, layers, bias):
    # cell_from_gates against torch's fused cells, values and gradients
    import torch.nn.functional as F
    from nlpseq.nn.decoders import rnn_step

    torch.manual_seed(0)
    if kind.startswith("rnn"):
        rnn = torch.nn.RNN(5, 6, layers, nonlinearity=kind[4:], bias=bias, batch_first=True)
    else:
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](5, 6, layers, bias=bias, batch_first=True)
    rnn = rnn.double()
    x = torch.randn(4, 5, dtype=torch.double)
    h = list(torch.randn(layers, 4, 6, dtype=torch.double).unbind(0))
    c = list(torch.randn(layers, 4, 6, dtype=torch.double).unbind(0)) if kind == "lstm" else None
    results = []
    for precomputed in (False, True):
        rnn.zero_grad()
        if precomputed:
            gates = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0 if bias else None)
            out, hs, cs = rnn_step(rnn, None, h, c, first_gates=gates)
        else:
            out, hs, cs = rnn_step(rnn, x, h, c)
        (out.sum() + sum(s.square().sum() for s in hs + (cs or []))).backward()
        results.append((out, hs, cs, [p.grad.clone() for p in rnn.parameters()]))
    (out, hs, cs, g), (ref, ref_hs, ref_cs, ref_g) = results
    for a, b in zip([out, *hs, *(cs or []), *g], [ref, *ref_hs, *(ref_cs or []), *ref_g]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_cpu_tanh_matches_torch():
    from nlpseq.nn.decoders import tanh

    x = torch.cat([torch.linspace(-50, 50, 2001), torch.tensor([0.0, 1e-8, -1e-8, 1e30, -1e30])])
    torch.testing.assert_close(tanh(x), torch.tanh(x), rtol=0, atol=3e-7)
    x64 = x.double()
    torch.testing.assert_close(tanh(x64), torch.tanh(x64), rtol=0, atol=1e-15)
