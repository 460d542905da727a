/// A thin binding to the system's Open MPI (`libmpi.so.40`, Debian's `openmpi-bin` and `libopenmpi-dev`)
/// by P/Invoke, and the `ICommunicator` over MPI_COMM_WORLD. Open MPI's handles (MPI_COMM_WORLD,
/// MPI_DOUBLE, MPI_SUM …) are addresses of exported global objects, looked up once in `handles`.
/// Every call's error code is checked (errors return instead of aborting) and raised as `MpiException`
/// naming the call. `runRank` wraps a rank's main: an exception on any rank ends every rank with one
/// message; a watchdog aborts a collective that waits longer than `LONGNET_MPI_TIMEOUT` seconds.
/// Start ranks with `mpirun --allow-run-as-root --oversubscribe -np P dotnet app.dll`.
module LongNet.Distributed.Mpi

open System
open System.Diagnostics
open System.Runtime.InteropServices
open System.Text
open System.Threading

/// The shared library the binding loads (Open MPI 4.x and 5.x).
[<Literal>]
let LibraryName = "libmpi.so.40"

/// An MPI call returned an error: the call's name, the MPI error code and MPI's own message.
type MpiException(operation: string, code: int, description: string) =
    inherit Exception($"{operation} failed with MPI error {code}: {description}")

    /// The MPI function that failed.
    member _.Operation = operation
    /// The MPI error code.
    member _.Code = code

module internal Native =
    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Initialized(int& flag)

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Finalized(int& flag)

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Init_thread(nativeint argc, nativeint argv, int required, int& provided)

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Finalize()

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Comm_rank(nativeint comm, int& rank)

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Comm_size(nativeint comm, int& size)

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Comm_set_errhandler(nativeint comm, nativeint handler)

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Allgather(
        nativeint sendbuf,
        int sendcount,
        nativeint sendtype,
        nativeint recvbuf,
        int recvcount,
        nativeint recvtype,
        nativeint comm
    )

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Allgatherv(
        nativeint sendbuf,
        int sendcount,
        nativeint sendtype,
        nativeint recvbuf,
        int[] recvcounts,
        int[] displs,
        nativeint recvtype,
        nativeint comm
    )

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Alltoallv(
        nativeint sendbuf,
        int[] sendcounts,
        int[] sdispls,
        nativeint sendtype,
        nativeint recvbuf,
        int[] recvcounts,
        int[] rdispls,
        nativeint recvtype,
        nativeint comm
    )

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Allreduce(
        nativeint sendbuf,
        nativeint recvbuf,
        int count,
        nativeint datatype,
        nativeint op,
        nativeint comm
    )

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Barrier(nativeint comm)

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Abort(nativeint comm, int errorcode)

    [<DllImport(LibraryName, CallingConvention = CallingConvention.Cdecl)>]
    extern int MPI_Error_string(int errorcode, byte[] text, int& length)

    // glibc ≥ 2.34 exports dlopen from libc itself.
    [<DllImport("libc.so.6", CallingConvention = CallingConvention.Cdecl)>]
    extern nativeint dlopen(string file, int mode)

/// Open MPI's predefined handles: the addresses of its exported global objects.
type Handles =
    {
        /// MPI_COMM_WORLD (`ompi_mpi_comm_world`).
        CommWorld: nativeint
        /// MPI_FLOAT (`ompi_mpi_float`).
        Float32: nativeint
        /// MPI_DOUBLE (`ompi_mpi_double`).
        Float64: nativeint
        /// MPI_INT64_T (`ompi_mpi_int64_t`).
        Int64: nativeint
        /// MPI_BYTE (`ompi_mpi_byte`).
        Byte: nativeint
        /// MPI_SUM (`ompi_mpi_op_sum`).
        Sum: nativeint
        /// MPI_ERRORS_RETURN (`ompi_mpi_errors_return`).
        ErrorsReturn: nativeint
    }

let private load () =
    // RTLD_NOW | RTLD_GLOBAL: Open MPI's plug-ins resolve symbols of libmpi and its runtime globally.
    Native.dlopen (LibraryName, 0x2 ||| 0x100) |> ignore

    let library =
        try
            NativeLibrary.Load LibraryName
        with e ->
            raise (
                DllNotFoundException(
                    $"cannot load {LibraryName} (Open MPI): {e.Message} Install it with 'apt-get install -y openmpi-bin libopenmpi-dev'.",
                    e
                )
            )

    let export name =
        match NativeLibrary.TryGetExport(library, name) with
        | true, address -> address
        | _ ->
            raise (
                EntryPointNotFoundException(
                    $"{LibraryName} exports no '{name}': this binding reads Open MPI's handle objects and does not support other MPI implementations."
                )
            )

    {
        CommWorld = export "ompi_mpi_comm_world"
        Float32 = export "ompi_mpi_float"
        Float64 = export "ompi_mpi_double"
        Int64 = export "ompi_mpi_int64_t"
        Byte = export "ompi_mpi_byte"
        Sum = export "ompi_mpi_op_sum"
        ErrorsReturn = export "ompi_mpi_errors_return"
    }

/// Open MPI's handles, looked up once per process on first use (this loads libmpi).
let handles: Lazy<Handles> = lazy (load ())

let private describe (code: int) =
    let text = Array.zeroCreate<byte> 1024
    let mutable length = 0

    if Native.MPI_Error_string(code, text, &length) = 0 then
        Encoding.ASCII.GetString(text, 0, max 0 (min length text.Length))
    else
        "unknown error"

/// Raises `MpiException` naming `operation` when `code` is not MPI_SUCCESS (0).
let check (operation: string) (code: int) : unit =
    if code <> 0 then
        raise (MpiException(operation, code, describe code))

let private datatype (h: Handles) (element: ElementType) =
    match element with
    | ElementType.Float32 -> h.Float32
    | ElementType.Float64 -> h.Float64
    | ElementType.Int64 -> h.Int64
    | ElementType.Byte -> h.Byte

/// Whether MPI_Init has been called in this process (loads libmpi).
let isInitialized () : bool =
    handles.Force() |> ignore
    let mutable flag = 0
    check "MPI_Initialized" (Native.MPI_Initialized(&flag))
    flag <> 0

/// Whether this process was started by Open MPI's mpirun (it sets OMPI_COMM_WORLD_SIZE).
let launchedByMpirun () : bool =
    not (String.IsNullOrEmpty(Environment.GetEnvironmentVariable "OMPI_COMM_WORLD_SIZE"))

/// The MPI_COMM_WORLD communicator of this process. `Start` initialises MPI (thread level
/// MPI_THREAD_MULTIPLE requested, so the watchdog may abort while a collective waits); `Dispose` finalises it.
/// Each collective is timed by a watchdog thread: one that waits longer than `timeout` prints which call
/// was stuck and aborts every rank.
type MpiCommunicator private (rank: int, size: int, timeout: TimeSpan option) =
    let traffic = Traffic()
    let h = handles.Force()
    let mutable operation: string = null
    let mutable started = 0L
    let mutable finished = false

    let abort (code: int) (message: string) : unit =
        // one write, so the line cannot interleave with mpirun's own abort banner on the same stream
        Console.Error.Write($"longnet: {message}{Environment.NewLine}")
        Console.Error.Flush()
        Native.MPI_Abort(h.CommWorld, code) |> ignore
        // MPI_Abort does not return; should it, end this process so that mpirun ends the others.
        exit code

    let watchdog =
        match timeout with
        | None -> None
        | Some limit ->
            let thread =
                Thread(
                    (fun () ->
                        while not (Volatile.Read(&finished)) do
                            Thread.Sleep 100
                            let current = Volatile.Read(&operation)

                            if not (isNull current) then
                                let elapsed = Stopwatch.GetElapsedTime(Volatile.Read(&started))

                                if elapsed > limit && not (Volatile.Read(&finished)) then
                                    abort
                                        124
                                        $"rank {rank} of {size}: {current} did not complete within {limit.TotalSeconds} s ({Communicator.TimeoutVariable}); another rank stopped or failed. Aborting all ranks."),
                    IsBackground = true,
                    Name = "longnet-mpi-watchdog"
                )

            thread.Start()
            Some thread

    let guarded (name: string) (call: unit -> int) =
        Volatile.Write(&started, Stopwatch.GetTimestamp())
        Volatile.Write(&operation, name)

        try
            check name (call ())
        finally
            Volatile.Write(&operation, null)

    /// Initialises MPI (if needed) and returns MPI_COMM_WORLD with the given collective wait limit.
    static member Start(timeout: TimeSpan option) : MpiCommunicator =
        let h = handles.Force()
        let mutable flag = 0
        check "MPI_Initialized" (Native.MPI_Initialized(&flag))

        if flag = 0 then
            let mutable provided = 0
            check "MPI_Init_thread" (Native.MPI_Init_thread(0n, 0n, 3, &provided))

        check "MPI_Comm_set_errhandler" (Native.MPI_Comm_set_errhandler(h.CommWorld, h.ErrorsReturn))
        let mutable rank = 0
        let mutable size = 0
        check "MPI_Comm_rank" (Native.MPI_Comm_rank(h.CommWorld, &rank))
        check "MPI_Comm_size" (Native.MPI_Comm_size(h.CommWorld, &size))
        new MpiCommunicator(rank, size, timeout)

    /// Initialises MPI with the wait limit of `LONGNET_MPI_TIMEOUT` (default 300 s; 0: none).
    static member Start() : MpiCommunicator =
        MpiCommunicator.Start(Communicator.timeoutFromEnvironment ())

    /// This rank's index in MPI_COMM_WORLD.
    member _.Rank = rank
    /// The number of ranks in MPI_COMM_WORLD.
    member _.Size = size
    /// This process's communication counter.
    member _.Traffic = traffic

    /// Prints `message` on stderr as one line prefixed "longnet:" and aborts every rank with `code`.
    member _.Abort(code: int, message: string) : unit = abort code message

    interface ICommunicator with
        member _.Rank = rank
        member _.Size = size
        member _.Traffic = traffic

        member _.AllGather(send, count, recv, element) =
            let t = datatype h element
            guarded "MPI_Allgather" (fun () -> Native.MPI_Allgather(send, count, t, recv, count, t, h.CommWorld))
            let own = int64 count * int64 (ElementType.size element)
            traffic.Record(own * int64 (size - 1), own * int64 (size - 1))

        member _.AllGatherV(send, sendCount, recv, recvCounts, element) =
            let name = "MPI_Allgatherv"
            Communicator.checkCounts name size "recvCounts" recvCounts
            let displs = Communicator.displacements name recvCounts
            let t = datatype h element

            guarded name (fun () -> Native.MPI_Allgatherv(send, sendCount, t, recv, recvCounts, displs, t, h.CommWorld))

            let bytes (n: int64) = n * int64 (ElementType.size element)

            traffic.Record(
                bytes (int64 sendCount * int64 (size - 1)),
                bytes (Array.sumBy int64 recvCounts - int64 recvCounts.[rank])
            )

        member _.AllToAllV(send, sendCounts, recv, recvCounts, element) =
            let name = "MPI_Alltoallv"
            Communicator.checkCounts name size "sendCounts" sendCounts
            Communicator.checkCounts name size "recvCounts" recvCounts
            let sendDispls = Communicator.displacements name sendCounts
            let recvDispls = Communicator.displacements name recvCounts
            let t = datatype h element

            guarded name (fun () ->
                Native.MPI_Alltoallv(send, sendCounts, sendDispls, t, recv, recvCounts, recvDispls, t, h.CommWorld))

            let others (counts: int[]) =
                (Array.sumBy int64 counts - int64 counts.[rank])
                * int64 (ElementType.size element)

            traffic.Record(others sendCounts, others recvCounts)

        member _.AllReduceSum(send, recv, count, element) =
            if element = ElementType.Byte then
                invalidArg "element" "MPI_Allreduce sums Float32, Float64 or Int64, not bytes."

            guarded "MPI_Allreduce" (fun () ->
                Native.MPI_Allreduce(send, recv, count, datatype h element, h.Sum, h.CommWorld))

            let own =
                if size > 1 then
                    int64 count * int64 (ElementType.size element)
                else
                    0L

            traffic.Record(own, own)

        member _.Barrier() =
            guarded "MPI_Barrier" (fun () -> Native.MPI_Barrier h.CommWorld)
            traffic.Record(0L, 0L)

    interface IDisposable with
        /// Stops the watchdog and finalises MPI (once).
        member _.Dispose() =
            if not (Volatile.Read(&finished)) then
                Volatile.Write(&finished, true)
                watchdog |> Option.iter (fun t -> t.Join())
                let mutable flag = 0
                check "MPI_Finalized" (Native.MPI_Finalized(&flag))

                if flag = 0 then
                    check "MPI_Finalize" (Native.MPI_Finalize())

/// Runs one rank's main under MPI and returns its exit code: initialises MPI, runs `body`, finalises.
/// When `body` throws, the rank prints "longnet: rank r of P failed: …" on stderr and aborts every rank
/// (mpirun then exits non-zero). A `CollectiveException` (an error every rank detects the same way) is
/// reported by rank 0 only, so the run prints it once (another rank reports it after 10 s if rank 0 did not).
let runRank (body: MpiCommunicator -> int) : int =
    let comm = MpiCommunicator.Start()

    let code =
        try
            body comm
        with
        | :? CollectiveException as e ->
            if comm.Rank = 0 then
                comm.Abort(1, e.Message)
            else
                // Rank 0 reports and aborts, and mpirun ends this process; should rank 0 not have seen
                // the error, report it from here after a grace period.
                Thread.Sleep(TimeSpan.FromSeconds 10.0)
                comm.Abort(1, $"rank {comm.Rank} of {comm.Size}: {e.Message}")

            1
        | e ->
            comm.Abort(
                1,
                $"rank {comm.Rank} of {comm.Size} failed: {e.GetType().Name}: {e.Message} (aborting all ranks)"
            )

            1

    (comm :> IDisposable).Dispose()
    code
