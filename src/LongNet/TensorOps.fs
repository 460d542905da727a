/// Tensor sums whose implicit `alpha = 1` Scalar is owned and kept alive across the native call.
/// TorchSharp's `a + b` (`Tensor.add(Tensor)`) passes a temporary Scalar and keeps only its native handle,
/// so under GC pressure its finalizer can free it while libtorch reads it (seen in a 20-minute
/// `passkey-study` run as "Expected false to be true … Exception raised from toFloat" inside
/// `THSTensor_add`). Use these on paths that run in long loops.
module LongNet.TensorOps

open TorchSharp

/// a + b.
let plus (a: torch.Tensor) (b: torch.Tensor) : torch.Tensor =
    use one = (1).ToScalar()
    let sum = a.add (b, one)
    System.GC.KeepAlive one
    sum

/// a += b, in place; returns a.
let plusInPlace (a: torch.Tensor) (b: torch.Tensor) : torch.Tensor =
    use one = (1).ToScalar()
    let sum = a.add_ (b, one)
    System.GC.KeepAlive one
    sum
