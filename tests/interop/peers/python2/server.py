# Python 2.7: a stdlib SyncManager server with two more queues, `inbox` and
# `outbox`.
#
#     python2 server.py AUTHKEY_HEX
#
# Serves on 127.0.0.1 on a free port, prints `PORT <n>` once it listens, and
# serves until it is killed.  The outbox starts with three Python 2 values.
import binascii
import sys
import Queue
from multiprocessing.managers import SyncManager

inbox, outbox = Queue.Queue(), Queue.Queue()
for value in ['text', '\xe4\xb8\xad', u'\u4e2d']:
    outbox.put(value)


class QueueManager(SyncManager):
    pass

QueueManager.register('get_inbox', callable=lambda: inbox)
QueueManager.register('get_outbox', callable=lambda: outbox)

manager = QueueManager(address=('127.0.0.1', 0), authkey=binascii.unhexlify(sys.argv[1]))
server = manager.get_server()
sys.stdout.write('PORT %d\n' % server.address[1])
sys.stdout.flush()
server.serve_forever()
