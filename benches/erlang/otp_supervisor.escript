#!/usr/bin/env escript
%% -*- erlang -*-
%%
%% Erlang/OTP baseline for arbor's supervised-agent runtime: restart latency of a
%% one_for_one supervisor, spawn cost and memory of idle processes, and
%% simple_one_for_one start_child cost. See README.md next to this file.
%%
%% Run:  escript benches/erlang/otp_supervisor.escript
%%
%% VM args: none (no "%%!" line). Scheduler settings stay at the defaults (one
%% scheduler per core, default scheduler busy-wait), because that is what an OTP
%% node ships with and what a comparison against a default runtime should use.
%%
%% Output: one line per measurement, "otp <name> key=value ..."; latencies and
%% times are in microseconds (names ending in _us) unless the key says _ms;
%% memory in bytes/KiB. E.g.
%%   otp restart_us mean=12.3 p50=11.0 p90=20.0 p99=40.1 max=300.0 n=20000
-module(otp_supervisor).
-mode(compile).

-export([main/1]).
%% supervisor + gen_server callbacks (one module plays both roles; init/1
%% dispatches on its argument).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, start_worker/2]).

-define(WORKER, bench_agent).        % registered name of the supervised child
-define(STATE_TAB, bench_agent_state). % ETS table the "with state" child restores from
-define(STATE_ENTRIES, 1000).

-define(RESTART_WARMUP, 2000).
-define(RESTART_N, 20000).
%% A fresh supervisor is started for every batch of this many restarts (untimed).
%% OTP's supervisor keeps a list of its restart timestamps within `period` (1 s,
%% the smallest allowed) and walks it on every restart; thousands of restarts a
%% second would make that list, not the restart itself, dominate. A batch of 100
%% keeps the list at most 100 long, i.e. a supervisor that has seen <=100
%% restarts in the last second. Set to 0 to never recycle (see README).
-define(RESTART_BATCH, 100).
-define(SPAWN_N, 100000).
-define(START_CHILD_N, 20000).

main(_) ->
    %% A crashing gen_server and its supervisor each emit an error report through
    %% logger; formatting and printing 40,000 of them to stderr would be what is
    %% measured. Turn logging off: OTP's logger macros check the level first, so
    %% the reports are then skipped (a cheap check per crash, as in a node whose
    %% logger level filters them).
    ok = logger:set_primary_config(level, none),
    io:format("otp info otp_release=~s erts=~s schedulers_online=~b logical_processors=~p~n",
              [erlang:system_info(otp_release), erlang:system_info(version),
               erlang:system_info(schedulers_online),
               erlang:system_info(logical_processors_available)]),
    T0 = erlang:monotonic_time(millisecond),
    Cpu0 = cpu_jiffies(),
    setup_state_table(),
    bench_state_restore(),
    bench_restart(restart_us, stateless, crash),
    bench_restart(restart_state1000_us, state, crash),
    bench_restart(restart_kill_us, stateless, kill),
    bench_spawn(),
    bench_start_child(),
    io:format("otp run total_ms=~b cpu_steal_pct=~s~n",
              [erlang:monotonic_time(millisecond) - T0, steal_pct(Cpu0, cpu_jiffies())]).

%% Share of CPU time the hypervisor took from this VM during the run ("steal" in
%% /proc/stat), over all CPUs: a high value explains noisy tails.
cpu_jiffies() ->
    case file:read_file("/proc/stat") of
        {ok, <<"cpu ", Rest/binary>>} ->
            [Line | _] = binary:split(Rest, <<"\n">>),
            [binary_to_integer(F) || F <- binary:split(Line, <<" ">>, [global, trim_all])];
        _ ->
            undefined
    end.

steal_pct(A, B) when is_list(A), is_list(B), length(A) >= 8, length(B) >= 8 ->
    D = [Y - X || {X, Y} <- lists:zip(A, B)],
    Total = lists:sum(lists:sublist(D, 8)),   % user..steal; guest is inside user
    Steal = lists:nth(8, D),
    io_lib:format("~.1f", [100 * Steal / max(1, Total)]);
steal_pct(_, _) ->
    "na".

%%% ---------------------------------------------------------------------------
%%% Restart latency
%%% ---------------------------------------------------------------------------

setup_state_table() ->
    ets:new(?STATE_TAB, [named_table, public, set, {read_concurrency, true}]),
    ets:insert(?STATE_TAB,
               [{I, <<I:64, 0:192>>} || I <- lists:seq(1, ?STATE_ENTRIES)]),
    ok.

restore_state() ->
    maps:from_list(ets:tab2list(?STATE_TAB)).

%% The restore alone, in this process: what init/1 of the "with state" child adds.
bench_state_restore() ->
    _ = [restore_state() || _ <- lists:seq(1, 200)],
    Samples = [begin
                   T0 = now_ns(),
                   M = restore_state(),
                   T1 = now_ns(),
                   ?STATE_ENTRIES = map_size(M),
                   T1 - T0
               end || _ <- lists:seq(1, 5000)],
    report(state_restore1000_us, Samples).

%% One iteration: t0; make the child fail; poll whereis/1 until the supervisor
%% has registered a new pid; gen_server:call(Name, ping) to it; t1.
%% Trigger `crash`: gen_server:cast(Name, crash), the child's handle_cast
%% calls exit(boom) (an abnormal exit raised by the child itself, like a trap).
%% Trigger `kill`: exit(Pid, kill) from the bench process.
bench_restart(Label, Mode, Trigger) ->
    Run = fun(N) -> restart_batches(N, Mode, Trigger, []) end,
    _ = Run(?RESTART_WARMUP),
    report(Label, Run(?RESTART_N)).

restart_batches(0, _Mode, _Trigger, Acc) ->
    Acc;
restart_batches(N, Mode, Trigger, Acc) ->
    B = case ?RESTART_BATCH of 0 -> N; Sz -> min(N, Sz) end,
    Sup = start_restart_sup(Mode),
    Acc1 = restart_loop(B, Trigger, Acc),
    stop_sup(Sup),
    restart_batches(N - B, Mode, Trigger, Acc1).

restart_loop(0, _Trigger, Acc) ->
    Acc;
restart_loop(N, Trigger, Acc) ->
    Old = whereis(?WORKER),
    true = is_pid(Old),
    T0 = now_ns(),
    case Trigger of
        crash -> gen_server:cast(?WORKER, crash);
        kill -> exit(Old, kill)
    end,
    New = wait_new_pid(Old),
    pong = gen_server:call(New, ping),
    T1 = now_ns(),
    restart_loop(N - 1, Trigger, [T1 - T0 | Acc]).

%% Busy-poll, but yield between polls: without the yield this process keeps its
%% scheduler for a whole time slice (4000 reductions) while the child or the
%% supervisor may be queued behind it on the same scheduler, which measured
%% ~10x slower (p50 65-190 us instead of ~13 us) and was bimodal run to run.
wait_new_pid(Old) ->
    case whereis(?WORKER) of
        Old -> erlang:yield(), wait_new_pid(Old);
        undefined -> erlang:yield(), wait_new_pid(Old);
        New -> New
    end.

start_restart_sup(Mode) ->
    {ok, Sup} = supervisor:start_link(?MODULE, {sup, one_for_one, Mode}),
    unlink(Sup),
    Sup.

stop_sup(Sup) ->
    Ref = monitor(process, Sup),
    exit(Sup, shutdown),
    receive {'DOWN', Ref, process, Sup, _} -> ok end.

%%% ---------------------------------------------------------------------------
%%% Spawn cost and memory of idle processes
%%% ---------------------------------------------------------------------------

bench_spawn() ->
    %% warm-up
    W = [spawn(fun idle/0) || _ <- lists:seq(1, 10000)],
    stop_all(W),
    erlang:garbage_collect(),
    M0 = procs_mem_excl_self(),
    T0 = now_ns(),
    Pids = spawn_idle(?SPAWN_N, []),
    T1 = now_ns(),
    wait_waiting(Pids),
    M1 = procs_mem_excl_self(),
    {memory, One} = erlang:process_info(hd(Pids), memory),
    PerProc = (M1 - M0) / ?SPAWN_N,
    io:format("otp spawn_us per_spawn=~.3f total_ms=~.1f n=~b~n",
              [(T1 - T0) / ?SPAWN_N / 1000, (T1 - T0) / 1.0e6, ?SPAWN_N]),
    io:format("otp idle_process_mem bytes=~b kib=~.2f process_info_bytes=~b n=~b~n",
              [round(PerProc), PerProc / 1024, One, ?SPAWN_N]),
    stop_all(Pids).

spawn_idle(0, Acc) -> Acc;
spawn_idle(N, Acc) -> spawn_idle(N - 1, [spawn(fun idle/0) | Acc]).

idle() ->
    receive stop -> ok end.

stop_all(Pids) ->
    Refs = [{P, monitor(process, P)} || P <- Pids],
    [P ! stop || P <- Pids],
    [receive {'DOWN', R, process, P, _} -> ok end || {P, R} <- Refs],
    ok.

%% Every process has run to its receive (so its heap and stack are what an idle
%% process holds, not a not-yet-scheduled one).
wait_waiting(Pids) ->
    lists:foreach(fun wait_one/1, Pids).

wait_one(P) ->
    case erlang:process_info(P, status) of
        {status, waiting} -> ok;
        _ -> erlang:yield(), wait_one(P)
    end.

%% erlang:memory(processes) includes this process, whose heap holds the list of
%% 100,000 pids; leave it out.
procs_mem_excl_self() ->
    {memory, Self} = erlang:process_info(self(), memory),
    erlang:memory(processes) - Self.

%%% ---------------------------------------------------------------------------
%%% simple_one_for_one start_child
%%% ---------------------------------------------------------------------------

bench_start_child() ->
    %% warm-up on a throwaway supervisor
    S0 = start_sofo_sup(),
    [{ok, _} = supervisor:start_child(S0, []) || _ <- lists:seq(1, 2000)],
    stop_sup(S0),
    Sup = start_sofo_sup(),
    erlang:garbage_collect(),
    M0 = procs_mem_excl_self(),
    T0 = now_ns(),
    ok = start_children(Sup, ?START_CHILD_N),
    T1 = now_ns(),
    M1 = procs_mem_excl_self(),
    PerChild = (M1 - M0) / ?START_CHILD_N,
    io:format("otp start_child_us per_child=~.3f total_ms=~.1f n=~b~n",
              [(T1 - T0) / ?START_CHILD_N / 1000, (T1 - T0) / 1.0e6, ?START_CHILD_N]),
    %% includes the supervisor's own bookkeeping of the child
    io:format("otp gen_server_child_mem bytes=~b kib=~.2f n=~b~n",
              [round(PerChild), PerChild / 1024, ?START_CHILD_N]),
    Ts0 = now_ns(),
    stop_sup(Sup),
    Ts1 = now_ns(),
    io:format("otp sofo_shutdown_us per_child=~.3f n=~b~n",
              [(Ts1 - Ts0) / ?START_CHILD_N / 1000, ?START_CHILD_N]).

start_children(_Sup, 0) -> ok;
start_children(Sup, N) ->
    {ok, _} = supervisor:start_child(Sup, []),
    start_children(Sup, N - 1).

start_sofo_sup() ->
    {ok, Sup} = supervisor:start_link(?MODULE, {sup, simple_one_for_one, stateless}),
    unlink(Sup),
    Sup.

%%% ---------------------------------------------------------------------------
%%% Callbacks
%%% ---------------------------------------------------------------------------

%% supervisor
init({sup, one_for_one, Mode}) ->
    {ok, {#{strategy => one_for_one, intensity => 1000000, period => 1},
          [#{id => agent,
             start => {?MODULE, start_worker, [{local, ?WORKER}, Mode]},
             restart => permanent, shutdown => brutal_kill, type => worker}]}};
init({sup, simple_one_for_one, Mode}) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 1000000, period => 1},
          [#{id => agent,
             start => {?MODULE, start_worker, [anon, Mode]},
             restart => temporary, shutdown => brutal_kill, type => worker}]}};
%% gen_server
init({worker, stateless}) ->
    {ok, #{}};
init({worker, state}) ->
    {ok, restore_state()}.

start_worker(anon, Mode) ->
    gen_server:start_link(?MODULE, {worker, Mode}, []);
start_worker(Name, Mode) ->
    gen_server:start_link(Name, ?MODULE, {worker, Mode}, []).

handle_call(ping, _From, S) -> {reply, pong, S}.

handle_cast(crash, _S) -> exit(boom).

handle_info(_, S) -> {noreply, S}.

%%% ---------------------------------------------------------------------------
%%% Helpers
%%% ---------------------------------------------------------------------------

now_ns() -> erlang:monotonic_time(nanosecond).

report(Label, Samples) ->
    N = length(Samples),
    Sorted = list_to_tuple(lists:sort(Samples)),
    Pct = fun(P) -> element(max(1, min(N, round(P * N))), Sorted) / 1000 end,
    Mean = lists:sum(Samples) / N / 1000,
    io:format("otp ~s mean=~.1f p50=~.1f p90=~.1f p99=~.1f max=~.1f n=~b~n",
              [Label, Mean, Pct(0.50), Pct(0.90), Pct(0.99), element(N, Sorted) / 1000, N]).
