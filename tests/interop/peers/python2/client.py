# Python 2.7: a stdlib client of a SyncManager with two more queues, `inbox`
# and `outbox`.
#
#     python2 client.py PORT AUTHKEY_HEX
#
# Puts Python 2 values on the inbox (str, unicode, a dict, a datetime, a
# bytearray), takes what waits on the outbox, then waits on the empty outbox
# with a timeout; then reads a dict proxy inside a list proxy, a Namespace and
# a Value.  Prints one JSON line: [type name, repr] of each value taken, the
# name of the exception that the last get raised, then the three values read.
import binascii
import datetime
import json
import multiprocessing
import sys
import Queue
from multiprocessing.managers import SyncManager


class QueueManager(SyncManager):
    pass

QueueManager.register('get_inbox')
QueueManager.register('get_outbox')

port, authkey = int(sys.argv[1]), binascii.unhexlify(sys.argv[2])
multiprocessing.current_process().authkey = authkey  # for the proxy inside the list
manager = QueueManager(address=('127.0.0.1', port), authkey=authkey)
manager.connect()
inbox, outbox = manager.get_inbox(), manager.get_outbox()
for value in ['text', '\xe4\xb8\xad', u'\u4e2d', {'url': 'http://example.org/', 'n': 1},
              datetime.datetime(2018, 4, 8, 1, 42, 14), bytearray('\x00\xff')]:
    inbox.put(value)
taken = []
while len(taken) < 3:
    value = outbox.get(timeout=10)
    taken.append([type(value).__name__, repr(value)])
try:
    outbox.get(timeout=0.01)
    taken.append('no exception')
except Queue.Empty:
    taken.append('Queue.Empty')
inner = manager.dict()
inner['a'] = 1
outer = manager.list([inner])
taken += [outer[0]['a'], manager.Namespace(x=2).x, manager.Value('i', 3).value]
print(json.dumps(taken))
