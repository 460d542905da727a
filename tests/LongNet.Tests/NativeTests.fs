module LongNet.Tests.NativeTests
