%% The Erlang peer of bench_timer: the phone-idle churn on erlang:send_after/cancel_timer.
%% Run by bench_timer as `erl -noshell -eval 'timer_bench:main(N, M, Repeats, Probe)'`; prints one
%% `key value...` line per result for the C++ side to parse.
-module(timer_bench).
-export([main/4]).

%% Deadlines are uniform in [1 s, 60 s], as for the C++ peers.
-define(MIN_MS, 1000).
-define(SPAN_MS, 59000).

main(N, M, Repeats, Probe) ->
    [run(N, M) || _ <- lists:seq(1, Repeats)],
    lateness(Probe),
    io:format("done~n"),
    halt(0).

%% Fill N timers (one reference per phone kept in the process dictionary, as a phone process
%% would keep its own), then M re-arms of random phones: cancel_timer + send_after = 2 ops.
run(N, M) ->
    erase(),
    flush(),
    erlang:garbage_collect(),
    Mem0 = erlang:memory(total),
    T0 = erlang:monotonic_time(nanosecond),
    fill(N),
    T1 = erlang:monotonic_time(nanosecond),
    erlang:garbage_collect(),
    Mem1 = erlang:memory(total),
    T2 = erlang:monotonic_time(nanosecond),
    churn(N, M),
    T3 = erlang:monotonic_time(nanosecond),
    io:format("fill_ops_per_s ~.1f~n", [N * 1.0e9 / (T1 - T0)]),
    io:format("bytes_per_timer ~.1f~n", [(Mem1 - Mem0) / N]),
    io:format("churn_ops_per_s ~.1f~n", [2 * M * 1.0e9 / (T3 - T2)]),
    [erlang:cancel_timer(R, [{async, true}, {info, false}]) || {I, R} <- erase(), is_integer(I)],
    flush().

fill(0) -> ok;
fill(I) ->
    put(I, erlang:send_after(?MIN_MS + rand:uniform(?SPAN_MS) - 1, self(), {idle, I})),
    fill(I - 1).

churn(_, 0) -> ok;
churn(N, K) ->
    I = rand:uniform(N),
    erlang:cancel_timer(get(I), [{async, true}, {info, false}]),
    put(I, erlang:send_after(?MIN_MS + rand:uniform(?SPAN_MS) - 1, self(), {idle, I})),
    churn(N, K - 1).

flush() ->
    receive _ -> flush() after 0 -> ok end.

%% Probe timers due in [1, 50] ms; lateness = receive time - deadline, in microseconds.
lateness(K) ->
    Now = erlang:monotonic_time(microsecond),
    [begin
         D = rand:uniform(50),
         erlang:send_after(D, self(), {probe, Now + D * 1000})
     end || _ <- lists:seq(1, K)],
    Late = collect(K, []),
    Sorted = lists:sort(Late),
    io:format("late_us_p50 ~p~n", [lists:nth(max(1, K div 2), Sorted)]),
    io:format("late_us_max ~p~n", [lists:last(Sorted)]),
    io:format("late_us_min ~p~n", [hd(Sorted)]).

collect(0, Acc) -> Acc;
collect(K, Acc) ->
    receive {probe, Deadline} -> collect(K - 1, [erlang:monotonic_time(microsecond) - Deadline | Acc]) end.
