/// The collective operations sequence-parallel attention is written against, independent of the
/// transport: a real MPI (`Mpi.fs`) or P ranks simulated in one process (`Simulated.fs`).
/// Buffers are contiguous native memory (a CPU tensor's data or a pinned array); counts are elements.
namespace LongNet.Distributed

open System
open System.Threading

/// The element type of a communication buffer.
[<RequireQualifiedAccess>]
type ElementType =
    /// 32-bit IEEE float.
    | Float32
    /// 64-bit IEEE float.
    | Float64
    /// 64-bit signed integer.
    | Int64
    /// Raw byte (any data moved without arithmetic).
    | Byte

/// Functions over element types.
module ElementType =
    /// The size of one element in bytes.
    let size (element: ElementType) : int =
        match element with
        | ElementType.Float32 -> 4
        | ElementType.Float64 -> 8
        | ElementType.Int64 -> 8
        | ElementType.Byte -> 1

/// What one rank handed to and took from the transport, in bytes, and how many collective calls it made.
type TrafficSnapshot =
    {
        /// Payload bytes this rank sent to other ranks.
        BytesSent: int64
        /// Payload bytes this rank received from other ranks.
        BytesReceived: int64
        /// Collective calls made.
        Calls: int64
    }

    /// Sent plus received bytes.
    member t.Total = t.BytesSent + t.BytesReceived

/// A thread-safe counter of one rank's communication. Counted as the payload each rank exchanges with
/// the *other* ranks (never its own block): all-to-all-v: the rows addressed to and from other ranks;
/// all-gather(v): its own block once per other rank sent, the other ranks' blocks received; all-reduce:
/// the buffer once each way (a ring all-reduce moves 2(P−1)/P of that); barrier: nothing.
type Traffic() =
    let mutable sent = 0L
    let mutable received = 0L
    let mutable calls = 0L

    /// Records one collective call that sent and received the given byte counts.
    member _.Record(bytesSent: int64, bytesReceived: int64) =
        Interlocked.Add(&sent, bytesSent) |> ignore
        Interlocked.Add(&received, bytesReceived) |> ignore
        Interlocked.Increment(&calls) |> ignore

    /// The counts so far.
    member _.Snapshot() : TrafficSnapshot =
        {
            BytesSent = Interlocked.Read(&sent)
            BytesReceived = Interlocked.Read(&received)
            Calls = Interlocked.Read(&calls)
        }

    /// Sets every count back to zero.
    member _.Reset() =
        Interlocked.Exchange(&sent, 0L) |> ignore
        Interlocked.Exchange(&received, 0L) |> ignore
        Interlocked.Exchange(&calls, 0L) |> ignore

/// An error every rank detects identically (for example configurations that differ across ranks):
/// one rank reports it, so a failed run prints one message instead of one per rank.
type CollectiveException(message: string) =
    inherit Exception(message)

/// A group of ranks that run collectives together. Every rank must make the same calls in the same
/// order with matching counts (as in MPI); a rank that stops calling makes the others wait.
type ICommunicator =
    /// This rank's index in [0, Size).
    abstract Rank: int
    /// The number of ranks.
    abstract Size: int
    /// This rank's communication counter.
    abstract Traffic: Traffic

    /// Every rank contributes `count` elements at `send`; `recv` receives Size·count elements in rank order.
    abstract AllGather: send: nativeint * count: int * recv: nativeint * element: ElementType -> unit

    /// Every rank contributes `sendCount` elements; `recv` receives Σ recvCounts elements, rank q's block
    /// (recvCounts.[q] elements, equal to q's sendCount) after the blocks of ranks < q.
    abstract AllGatherV:
        send: nativeint * sendCount: int * recv: nativeint * recvCounts: int[] * element: ElementType -> unit

    /// Rank p sends sendCounts.[q] elements to rank q (blocks laid out in rank order at `send`) and receives
    /// recvCounts.[q] elements from rank q (laid out in rank order at `recv`); the counts must match pairwise.
    abstract AllToAllV:
        send: nativeint * sendCounts: int[] * recv: nativeint * recvCounts: int[] * element: ElementType -> unit

    /// Element-wise sum over the ranks of `count` elements at `send`, written to `recv` on every rank
    /// (`send` and `recv` must not overlap). Float32, Float64 or Int64.
    abstract AllReduceSum: send: nativeint * recv: nativeint * count: int * element: ElementType -> unit

    /// Waits until every rank has reached the barrier.
    abstract Barrier: unit -> unit

/// Functions shared by the communicator implementations.
module Communicator =
    /// The environment variable giving the seconds a collective may wait before the run is aborted.
    [<Literal>]
    let TimeoutVariable = "LONGNET_MPI_TIMEOUT"

    /// The default wait limit of one collective when `LONGNET_MPI_TIMEOUT` is unset: 300 s.
    let defaultTimeout = TimeSpan.FromSeconds 300.0

    /// The collective wait limit from `LONGNET_MPI_TIMEOUT` (seconds, > 0; 0 means no limit), or the default.
    let timeoutFromEnvironment () : TimeSpan option =
        match Environment.GetEnvironmentVariable TimeoutVariable with
        | null
        | "" -> Some defaultTimeout
        | text ->
            match
                Double.TryParse(text, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture)
            with
            | true, s when s = 0.0 -> None
            | true, s when s > 0.0 && Double.IsFinite s -> Some(TimeSpan.FromSeconds s)
            | _ ->
                raise (
                    ArgumentException(
                        $"{TimeoutVariable} must be a number of seconds ≥ 0 (0: no limit); got '{text}'.",
                        TimeoutVariable
                    )
                )

    /// Displacements (exclusive prefix sums) of per-rank element counts, checked against int overflow.
    let displacements (operation: string) (counts: int[]) : int[] =
        let result = Array.zeroCreate counts.Length
        let mutable total = 0L

        for i in 0 .. counts.Length - 1 do
            if counts.[i] < 0 then
                invalidArg "counts" $"{operation}: count for rank {i} is negative ({counts.[i]})."

            result.[i] <- int total
            total <- total + int64 counts.[i]

            if total > int64 Int32.MaxValue then
                invalidArg "counts" $"{operation}: more than {Int32.MaxValue} elements in one call; split the buffer."

        result

    /// Checks that a count array has one entry per rank.
    let checkCounts (operation: string) (size: int) (name: string) (counts: int[]) =
        if isNull counts || counts.Length <> size then
            invalidArg name $"{operation}: {name} must have one entry per rank ({size})."
