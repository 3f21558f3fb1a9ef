%% The Erlang peer for bench_actors: the same fan-in, ping-pong and ring workloads, so one run
%% compares agner, raw CAF and BEAM on this machine. Prints "RESULT <name> <msgs/s>" lines.
-module(actors).
-export([main/1]).

main([P, M, K, N, RingSize, Rounds, Repeats]) ->
    [Pi, Mi, Ki, Ni, Ri, Roi, Rep] = [list_to_integer(A) || A <- [P, M, K, N, RingSize, Rounds, Repeats]],
    [report("fanin", fanin(Pi, Mi, Ki)) || _ <- lists:seq(1, Rep)],
    [report("pingpong", pingpong(Ni)) || _ <- lists:seq(1, Rep)],
    [report("ring", ring(Ri, Roi)) || _ <- lists:seq(1, Rep)],
    halt(0).

report(Name, Rate) -> io:format("RESULT ~s ~p~n", [Name, Rate]).

rate(Msgs, Micros) -> Msgs * 1000000 / max(Micros, 1).

%% P producers each send M messages round-robin to K consumers; consumers count and report.
fanin(P, M, K) ->
    Self = self(),
    Consumers = list_to_tuple([spawn(fun() -> consumer(Self, 0) end) || _ <- lists:seq(1, K)]),
    T0 = erlang:monotonic_time(microsecond),
    [spawn(fun() -> produce(Consumers, K, I, M) end) || I <- lists:seq(1, P)],
    Total = P * M,
    wait_total(Total, 0, Consumers),
    T1 = erlang:monotonic_time(microsecond),
    rate(Total, T1 - T0).

produce(_, _, _, 0) -> ok;
produce(Cs, K, I, Left) ->
    element((I + Left) rem K + 1, Cs) ! {msg, Left},
    produce(Cs, K, I, Left - 1).

consumer(Parent, N) ->
    receive
        {msg, _} -> consumer(Parent, N + 1);
        report -> Parent ! {count, N}, consumer(Parent, 0);
        stop -> ok
    end.

%% Poll consumers until every message has been received.
wait_total(Total, _, Cs) ->
    Got = lists:sum([begin element(I, Cs) ! report, receive {count, C} -> C end end || I <- lists:seq(1, tuple_size(Cs))]),
    wait_more(Total, Got, Cs).

wait_more(Total, Got, Cs) when Got >= Total ->
    [element(I, Cs) ! stop || I <- lists:seq(1, tuple_size(Cs))], ok;
wait_more(Total, Got, Cs) ->
    Got2 = Got + lists:sum([begin element(I, Cs) ! report, receive {count, C} -> C end end || I <- lists:seq(1, tuple_size(Cs))]),
    wait_more(Total, Got2, Cs).

%% Two processes bounce a counter N times.
pingpong(N) ->
    Self = self(),
    B = spawn(fun() -> bouncer() end),
    A = spawn(fun() -> receive {go, Peer} -> pinger(Peer, N, Self) end end),
    T0 = erlang:monotonic_time(microsecond),
    A ! {go, B},
    receive done -> ok end,
    T1 = erlang:monotonic_time(microsecond),
    B ! stop,
    rate(N, T1 - T0).

pinger(_, 0, Parent) -> Parent ! done;
pinger(Peer, N, Parent) ->
    Peer ! {ping, self()},
    receive pong -> pinger(Peer, N - 1, Parent) end.

bouncer() ->
    receive
        {ping, From} -> From ! pong, bouncer();
        stop -> ok
    end.

%% A token passes Rounds times around a ring of Size processes.
ring(Size, Rounds) ->
    Self = self(),
    First = spawn(fun() -> receive {next, Next} -> ring_node(Next, Self) end end),
    Last = lists:foldl(fun(_, Next) -> spawn(fun() -> ring_node(Next, Self) end) end, First, lists:seq(2, Size)),
    First ! {next, Last},
    T0 = erlang:monotonic_time(microsecond),
    Hops = Size * Rounds,
    First ! {token, Hops},
    receive ring_done -> ok end,
    T1 = erlang:monotonic_time(microsecond),
    rate(Hops, T1 - T0).

ring_node(Next, Parent) ->
    receive
        {token, 0} -> Parent ! ring_done, ring_node(Next, Parent);
        {token, N} -> Next ! {token, N - 1}, ring_node(Next, Parent)
    end.
