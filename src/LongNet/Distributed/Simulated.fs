/// P ranks simulated in one process: one thread per rank, collectives through shared buffers and a
/// barrier. Used to test the distributed algorithm without mpirun and to measure its communication
/// volume for any P on one machine. Counts bytes exactly as the MPI communicator does.
namespace LongNet.Distributed

open System
open System.Runtime.InteropServices
open System.Threading

/// What one rank posted for the collective in progress.
type internal Post =
    {
        Operation: string
        Send: nativeint
        SendCounts: int[]
        Count: int
        Element: ElementType
    }

/// A simulated rank failed: its index, the world size and the original exception.
type RankFailedException(rank: int, size: int, inner: exn) =
    inherit Exception($"simulated rank {rank} of {size} failed: {inner.GetType().Name}: {inner.Message}", inner)

    /// The rank that failed.
    member _.Rank = rank

/// The shared state of `size` simulated ranks; a collective waits at most `timeout` for the others.
type SimulatedWorld(size: int, timeout: TimeSpan option) =
    do
        if size < 1 then
            invalidArg "size" $"size must be ≥ 1, got {size}."

    let barrier = new Barrier(size)
    let cancel = new CancellationTokenSource()
    let posts: Post[] = Array.zeroCreate size

    /// The number of ranks.
    member _.Size = size

    /// Publishes rank `rank`'s part of the collective in progress.
    member internal _.Post(rank: int, post: Post) = posts.[rank] <- post

    /// What rank `rank` published for the collective in progress.
    member internal _.PostOf(rank: int) = posts.[rank]

    /// Waits for every rank; raises `TimeoutException` naming `operation` after the timeout, and
    /// `OperationCanceledException` when another rank failed.
    member _.Sync(rank: int, operation: string) =
        let limit =
            match timeout with
            | Some t -> int (min t.TotalMilliseconds (float Int32.MaxValue))
            | None -> Timeout.Infinite

        if not (barrier.SignalAndWait(limit, cancel.Token)) then
            cancel.Cancel()

            raise (
                TimeoutException(
                    $"rank {rank} of {size}: {operation} did not complete within {timeout.Value.TotalSeconds} s ({Communicator.TimeoutVariable}); another rank stopped or failed."
                )
            )

    /// Releases every waiting rank with `OperationCanceledException` (called when a rank fails).
    member _.Fail() = cancel.Cancel()

    interface IDisposable with
        member _.Dispose() =
            barrier.Dispose()
            cancel.Dispose()

/// Rank `rank` of a simulated world.
type SimulatedCommunicator(world: SimulatedWorld, rank: int) =
    let traffic = Traffic()
    let size = world.Size

    let copy (source: nativeint) (destination: nativeint) (elements: int) (element: ElementType) =
        let bytes = int64 elements * int64 (ElementType.size element)

        if bytes > 0L then
            Buffer.MemoryCopy(source.ToPointer(), destination.ToPointer(), bytes, bytes)

    let post operation send sendCounts count element =
        world.Post(
            rank,
            {
                Operation = operation
                Send = send
                SendCounts = sendCounts
                Count = count
                Element = element
            }
        )

        world.Sync(rank, operation)

    let check operation (q: int) =
        let other = world.PostOf q

        if other.Operation <> operation then
            raise (
                InvalidOperationException(
                    $"rank {rank} called {operation} while rank {q} called {other.Operation}: the ranks' collective calls differ."
                )
            )

        other

    let bytes (element: ElementType) (elements: int64) =
        elements * int64 (ElementType.size element)

    /// This rank's index.
    member _.Rank = rank

    interface ICommunicator with
        member _.Rank = rank
        member _.Size = size
        member _.Traffic = traffic

        member _.AllGather(send, count, recv, element) =
            let operation = "AllGather"
            post operation send null count element

            for q in 0 .. size - 1 do
                let other = check operation q

                if other.Count <> count || other.Element <> element then
                    raise (
                        InvalidOperationException(
                            $"{operation}: rank {q} contributes {other.Count} {other.Element}, rank {rank} expects {count} {element}."
                        )
                    )

                copy other.Send (recv + nativeint (bytes element (int64 q * int64 count))) count element

            world.Sync(rank, operation)
            let own = bytes element (int64 count)
            traffic.Record(own * int64 (size - 1), own * int64 (size - 1))

        member _.AllGatherV(send, sendCount, recv, recvCounts, element) =
            let operation = "AllGatherV"
            Communicator.checkCounts operation size "recvCounts" recvCounts
            let displs = Communicator.displacements operation recvCounts
            post operation send null sendCount element

            for q in 0 .. size - 1 do
                let other = check operation q

                if other.Count <> recvCounts.[q] || other.Element <> element then
                    raise (
                        InvalidOperationException(
                            $"{operation}: rank {q} contributes {other.Count} {other.Element}, rank {rank} expects {recvCounts.[q]} {element}."
                        )
                    )

                copy other.Send (recv + nativeint (bytes element (int64 displs.[q]))) other.Count element

            world.Sync(rank, operation)
            let others = (Array.sumBy int64 recvCounts) - int64 sendCount
            traffic.Record(bytes element (int64 sendCount * int64 (size - 1)), bytes element others)

        member _.AllToAllV(send, sendCounts, recv, recvCounts, element) =
            let operation = "AllToAllV"
            Communicator.checkCounts operation size "sendCounts" sendCounts
            Communicator.checkCounts operation size "recvCounts" recvCounts
            Communicator.displacements operation sendCounts |> ignore
            let recvDispls = Communicator.displacements operation recvCounts
            post operation send sendCounts 0 element

            for q in 0 .. size - 1 do
                let other = check operation q
                let offset = Array.sum other.SendCounts.[.. rank - 1]
                let count = other.SendCounts.[rank]

                if count <> recvCounts.[q] || other.Element <> element then
                    raise (
                        InvalidOperationException(
                            $"{operation}: rank {q} sends {count} {other.Element} to rank {rank}, which expects {recvCounts.[q]} {element}."
                        )
                    )

                copy
                    (other.Send + nativeint (bytes element (int64 offset)))
                    (recv + nativeint (bytes element (int64 recvDispls.[q])))
                    count
                    element

            world.Sync(rank, operation)

            let others (counts: int[]) =
                bytes element (Array.sumBy int64 counts - int64 counts.[rank])

            traffic.Record(others sendCounts, others recvCounts)

        member _.AllReduceSum(send, recv, count, element) =
            let operation = "AllReduceSum"
            post operation send null count element

            let sources =
                [|
                    for q in 0 .. size - 1 do
                        let other = check operation q

                        if other.Count <> count || other.Element <> element then
                            raise (
                                InvalidOperationException(
                                    $"{operation}: rank {q} reduces {other.Count} {other.Element}, rank {rank} {count} {element}."
                                )
                            )

                        other.Send
                |]

            // Summed in rank order, so every rank gets the same bits.
            let inline reduce (read: nativeint -> 'T[] -> unit) (write: 'T[] -> nativeint -> unit) =
                let acc = Array.zeroCreate<'T> count
                let next = Array.zeroCreate<'T> count
                read sources.[0] acc

                for q in 1 .. size - 1 do
                    read sources.[q] next

                    for i in 0 .. count - 1 do
                        acc.[i] <- acc.[i] + next.[i]

                write acc recv

            match element with
            | ElementType.Float32 ->
                reduce (fun p (a: float32[]) -> Marshal.Copy(p, a, 0, count)) (fun a p -> Marshal.Copy(a, 0, p, count))
            | ElementType.Float64 ->
                reduce (fun p (a: float[]) -> Marshal.Copy(p, a, 0, count)) (fun a p -> Marshal.Copy(a, 0, p, count))
            | ElementType.Int64 ->
                reduce (fun p (a: int64[]) -> Marshal.Copy(p, a, 0, count)) (fun a p -> Marshal.Copy(a, 0, p, count))
            | ElementType.Byte -> invalidArg "element" $"{operation} sums Float32, Float64 or Int64, not bytes."

            world.Sync(rank, operation)
            let own = bytes element (int64 count)
            traffic.Record((if size > 1 then own else 0L), (if size > 1 then own else 0L))

        member _.Barrier() =
            post "Barrier" 0n null 0 ElementType.Byte
            world.Sync(rank, "Barrier")
            traffic.Record(0L, 0L)

/// Running a function on P simulated ranks.
module Simulated =
    /// Runs `body` on `size` simulated ranks (one thread each) and returns their results in rank order.
    /// A collective waits at most `timeout`. When a rank throws, the others are released and the first
    /// failure (lowest rank) is raised: a `CollectiveException` as is, anything else wrapped in a
    /// `RankFailedException` naming the rank.
    let runWith (timeout: TimeSpan option) (size: int) (body: ICommunicator -> 'T) : 'T[] =
        use world = new SimulatedWorld(size, timeout)
        let results = Array.zeroCreate<'T> size
        let errors = Array.zeroCreate<exn> size

        let threads =
            Array.init size (fun rank ->
                Thread(
                    (fun () ->
                        try
                            results.[rank] <- body (SimulatedCommunicator(world, rank))
                        with e ->
                            errors.[rank] <- e
                            world.Fail()),
                    64 * 1024 * 1024
                ))

        for t in threads do
            t.Start()

        for t in threads do
            t.Join()

        let failures =
            errors
            |> Array.indexed
            |> Array.filter (fun (_, e) -> not (isNull e) && not (e :? OperationCanceledException))

        match failures with
        | [||] ->
            match errors |> Array.tryFind (isNull >> not) with
            | Some e -> raise (RankFailedException(Array.findIndex (isNull >> not) errors, size, e))
            | None -> results
        | _ ->
            match
                failures
                |> Array.tryPick (fun (_, e) ->
                    (match e with
                     | :? CollectiveException as c -> Some c
                     | _ -> None))
            with
            | Some c -> raise c
            | None ->
                let rank, e = failures.[0]
                raise (RankFailedException(rank, size, e))

    /// Runs `body` on `size` simulated ranks with the timeout of `LONGNET_MPI_TIMEOUT` (see `runWith`).
    let run (size: int) (body: ICommunicator -> 'T) : 'T[] =
        runWith (Communicator.timeoutFromEnvironment ()) size body
